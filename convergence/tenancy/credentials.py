"""Provider credentials per org, encrypted with KMS in org_integration_credentials.

Every read and write is `WHERE org_slug = @org_slug AND provider = @provider`; the ciphertext is also bound
to `org:provider` as associated data, so a row copied to another org or provider does not decrypt.
The plaintext is never logged, never put in an exception message.
"""

from __future__ import annotations

import base64
import re
import uuid

import structlog
from google.cloud import bigquery

from convergence.kms import Cipher, CipherError
from convergence.settings import Settings
from convergence.tenancy.central import Central, utcnow
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

log = structlog.get_logger(__name__)

TABLE = "org_integration_credentials"
_PROVIDER = re.compile(r"[A-Z][A-Z0-9_]{1,49}")
_STATUSES = ("VALID", "INVALID", "PENDING")


class CredentialNotFound(LookupError):
    code = "CREDENTIAL_NOT_FOUND"


class CredentialDecryptError(RuntimeError):
    code = "CREDENTIAL_DECRYPT_FAILED"


def validate_provider(provider: str) -> str:
    name = str(provider).upper()
    if not _PROVIDER.fullmatch(name):
        raise InvalidIdentifier(f"invalid provider {str(provider)[:60]!r}: 2-50 characters of A-Z, 0-9 and _")
    return name


def credential_aad(org_slug: str, provider: str) -> bytes:
    return f"{org_slug}:{provider}".encode()


class CredentialStore:
    def __init__(self, client: bigquery.Client, settings: Settings, cipher: Cipher):
        self.central = Central(client, settings)
        self.cipher = cipher

    def put(self, org_slug: str, provider: str, secret: str, *, credential_name: str | None = None,
            validation_status: str = "PENDING") -> str:
        """Encrypt and store (replacing the org's current credential for the provider); returns its id."""
        org_slug, provider = validate_org_slug(org_slug), validate_provider(provider)
        if not isinstance(secret, str) or not secret:
            raise ValueError("the credential is empty")
        if validation_status not in _STATUSES:
            raise ValueError(f"validation_status must be one of {_STATUSES}")
        sealed = self.cipher.encrypt(secret.encode("utf-8"), aad=credential_aad(org_slug, provider))
        credential_id = uuid.uuid4().hex
        ref = self.central.ref(TABLE)
        # One MERGE: update the org's row for the provider, or insert it. DML rows stay updatable.
        self.central.queries.dml(
            f"MERGE {ref} AS T USING (SELECT @org_slug AS org_slug, @provider AS provider) AS S "  # noqa: S608
            "ON T.`org_slug` = S.org_slug AND T.`provider` = S.provider "
            "WHEN MATCHED THEN UPDATE SET `encrypted_credential` = @sealed, `credential_name` = @name, "
            "`kms_key_name` = @key, `validation_status` = @status, `is_active` = TRUE, `updated_at` = @now "
            "WHEN NOT MATCHED THEN INSERT (`credential_id`, `org_slug`, `provider`, `credential_name`, "
            "`encrypted_credential`, `kms_key_name`, `validation_status`, `is_active`, `created_at`, `updated_at`) "
            "VALUES (@credential_id, @org_slug, @provider, @name, @sealed, @key, @status, TRUE, @now, @now)",
            {"org_slug": org_slug, "provider": provider, "sealed": base64.b64encode(sealed).decode("ascii"),
             "name": credential_name, "key": self.cipher.key_name, "status": validation_status,
             "now": utcnow(), "credential_id": credential_id})
        log.info("credential stored", org_slug=org_slug, provider=provider)
        self.central.audit(org_slug, "CREDENTIAL_SET", resource_type="integration_credential", resource_id=provider,
                           details={"provider": provider, "credential_name": credential_name})
        return credential_id

    def get(self, org_slug: str, provider: str) -> str:
        """The org's active credential for the provider, decrypted. CredentialNotFound if there is none."""
        org_slug, provider = validate_org_slug(org_slug), validate_provider(provider)
        rows = self.central.queries.rows(
            f"SELECT `encrypted_credential` FROM {self.central.ref(TABLE)} "  # noqa: S608 - validated name
            "WHERE `org_slug` = @org_slug AND `provider` = @provider AND `is_active` = TRUE "
            "ORDER BY `updated_at` DESC LIMIT 1", {"org_slug": org_slug, "provider": provider})
        if not rows:
            raise CredentialNotFound(f"org {org_slug} has no {provider} credential")
        try:
            sealed = base64.b64decode(rows[0]["encrypted_credential"], validate=True)
            return self.cipher.decrypt(sealed, aad=credential_aad(org_slug, provider)).decode("utf-8")
        except (CipherError, ValueError) as error:
            raise CredentialDecryptError(f"the {provider} credential of org {org_slug} does not decrypt "
                                         f"({type(error).__name__})") from None

    def delete(self, org_slug: str, provider: str) -> bool:
        org_slug, provider = validate_org_slug(org_slug), validate_provider(provider)
        count = self.central.queries.dml(
            f"UPDATE {self.central.ref(TABLE)} SET `is_active` = FALSE, `updated_at` = @now "  # noqa: S608
            "WHERE `org_slug` = @org_slug AND `provider` = @provider AND `is_active` = TRUE",
            {"org_slug": org_slug, "provider": provider, "now": utcnow()})
        if count:
            self.central.audit(org_slug, "CREDENTIAL_REMOVED", resource_type="integration_credential",
                               resource_id=provider)
        return bool(count)

    def providers(self, org_slug: str) -> list[dict[str, object]]:
        """The org's active credentials without their values: provider, name, status, updated_at."""
        rows = self.central.queries.rows(
            f"SELECT `provider`, `credential_name`, `validation_status`, `updated_at` "  # noqa: S608
            f"FROM {self.central.ref(TABLE)} WHERE `org_slug` = @org_slug AND `is_active` = TRUE "
            "ORDER BY `provider`", {"org_slug": validate_org_slug(org_slug)})
        return rows
