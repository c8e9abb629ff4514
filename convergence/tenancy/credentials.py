"""Provider credentials per org, encrypted with KMS in org_integration_credentials.

Every read and write is `WHERE org_slug = @org_slug AND provider IN (the provider's names)`; the ciphertext
is also bound to `org:provider` (the name the row is stored under) as associated data, so a row copied to
another org or provider does not decrypt. Provider names go through the registry (configs/system/providers.yml):
a credential is stored under the canonical name, and a row stored under an alias (CLAUDE) is ANTHROPIC's.
The plaintext is never logged, never put in an exception message.

Rows are only ever written by DML (MERGE/UPDATE), never streamed: BigQuery refuses DML on streamed rows
for up to 30 minutes ("Streaming data into BigQuery": data in the streaming buffer).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from google.cloud import bigquery

from convergence.kms import Cipher, CipherError
from convergence.pipeline.errors import ErrorCode
from convergence.settings import Settings
from convergence.tenancy.central import Central, utcnow
from convergence.tenancy.providers import load_registry
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

log = structlog.get_logger(__name__)

TABLE = "org_integration_credentials"
_PROVIDER = re.compile(r"[A-Z][A-Z0-9_]{1,49}")
_STATUSES = ("VALID", "INVALID", "PENDING", "ERROR")
_ERROR_CHARS = 500


class CredentialNotFound(LookupError):
    code = ErrorCode.CREDENTIAL_NOT_FOUND


class CredentialDecryptError(RuntimeError):
    code = ErrorCode.CREDENTIAL_DECRYPT_FAILED


def validate_provider(provider: str) -> str:
    name = str(provider).upper()
    if not _PROVIDER.fullmatch(name):
        raise InvalidIdentifier(f"invalid provider {str(provider)[:60]!r}: 2-50 characters of A-Z, 0-9 and _")
    return name


def credential_aad(org_slug: str, provider: str) -> bytes:
    return f"{org_slug}:{provider}".encode()


def fingerprint(secret: str) -> str:
    """A short, non-reversible label of a secret for listings: never the secret or a part of it."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class StoredCredential:
    secret: str
    provider: str  # the name the row is stored under (canonical, or an alias for older rows)
    credential_id: str
    updated_at: datetime | None

    def __repr__(self) -> str:
        return f"StoredCredential(provider={self.provider!r}, credential_id={self.credential_id!r})"


class CredentialStore:
    def __init__(self, client: bigquery.Client, settings: Settings, cipher: Cipher):
        self.central = Central(client, settings)
        self.cipher = cipher
        self.registry = load_registry(settings.configs_dir)

    def canonical(self, provider: str) -> str:
        return self.registry.canonical(validate_provider(provider))

    def names(self, provider: str) -> list[str]:
        return list(self.registry.names(validate_provider(provider)))

    def put(self, org_slug: str, provider: str, secret: str, *, credential_name: str | None = None,
            validation_status: str = "PENDING") -> str:
        """Encrypt and store (replacing the org's current credential for the provider); returns its id."""
        org_slug, provider = validate_org_slug(org_slug), self.canonical(provider)
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
            "`kms_key_name` = @key, `validation_status` = @status, `validation_error` = NULL, "
            "`last_validated_at` = NULL, `is_active` = TRUE, `updated_at` = @now "
            "WHEN NOT MATCHED THEN INSERT (`credential_id`, `org_slug`, `provider`, `credential_name`, "
            "`encrypted_credential`, `kms_key_name`, `validation_status`, `is_active`, `created_at`, `updated_at`) "
            "VALUES (@credential_id, @org_slug, @provider, @name, @sealed, @key, @status, TRUE, @now, @now)",
            {"org_slug": org_slug, "provider": provider, "sealed": base64.b64encode(sealed).decode("ascii"),
             "name": credential_name, "key": self.cipher.key_name, "status": validation_status,
             "now": utcnow(), "credential_id": credential_id})
        aliases = [name for name in self.names(provider) if name != provider]
        if aliases:  # a row left under an alias must not outlive the new credential
            self.central.queries.dml(
                f"UPDATE {ref} SET `is_active` = FALSE, `updated_at` = @now "  # noqa: S608 - validated name
                "WHERE `org_slug` = @org_slug AND `provider` IN UNNEST(@aliases) AND `is_active` = TRUE",
                {"org_slug": org_slug, "aliases": aliases, "now": utcnow()})
        log.info("credential stored", org_slug=org_slug, provider=provider)
        self.central.audit(org_slug, "CREDENTIAL_SET", resource_type="integration_credential", resource_id=provider,
                           details={"provider": provider, "credential_name": credential_name})
        return credential_id

    def get(self, org_slug: str, provider: str) -> str:
        """The org's active credential for the provider, decrypted. CredentialNotFound if there is none."""
        return self.read(org_slug, provider).secret

    def read(self, org_slug: str, provider: str) -> StoredCredential:
        """The org's active credential for the provider (under its canonical name or an alias), decrypted,
        with the row's id and version."""
        org_slug, names = validate_org_slug(org_slug), self.names(provider)
        rows = self.central.queries.rows(
            f"SELECT `credential_id`, `provider`, `encrypted_credential`, `updated_at` "  # noqa: S608
            f"FROM {self.central.ref(TABLE)} "
            "WHERE `org_slug` = @org_slug AND `provider` IN UNNEST(@providers) AND `is_active` = TRUE "
            "ORDER BY `updated_at` DESC LIMIT 1", {"org_slug": org_slug, "providers": names})
        if not rows:
            raise CredentialNotFound(f"org {org_slug} has no {names[0]} credential")
        row = rows[0]
        try:
            sealed = base64.b64decode(row["encrypted_credential"], validate=True)
            secret = self.cipher.decrypt(sealed, aad=credential_aad(org_slug, row["provider"])).decode("utf-8")
        except (CipherError, ValueError) as error:
            raise CredentialDecryptError(f"the {names[0]} credential of org {org_slug} does not decrypt "
                                         f"({type(error).__name__})") from None
        return StoredCredential(secret, str(row["provider"]), str(row["credential_id"]), row.get("updated_at"))

    def set_status(self, org_slug: str, provider: str, status: str, error: str | None = None, *,
                   only_from_valid: bool = False, not_changed_since: datetime | None = None) -> int:
        """Record a validation result on the org's active credential: one UPDATE. Returns the rows changed.

        `only_from_valid`: change only a credential not already INVALID (so a run's 401 is one transition,
        told once). `not_changed_since`: leave a credential replaced after that time alone (a rotated key
        is not condemned by a run that used the old one)."""
        org_slug, names = validate_org_slug(org_slug), self.names(provider)
        if status not in _STATUSES:
            raise ValueError(f"validation_status must be one of {_STATUSES}")
        sql = (f"UPDATE {self.central.ref(TABLE)} SET `validation_status` = @status, "  # noqa: S608
               "`validation_error` = @error, `last_validated_at` = @now "
               "WHERE `org_slug` = @org_slug AND `provider` IN UNNEST(@providers) AND `is_active` = TRUE")
        params: dict[str, object] = {"org_slug": org_slug, "providers": names, "status": status,
                                     "error": (error or None) and error[:_ERROR_CHARS], "now": utcnow()}
        if only_from_valid:
            sql += " AND COALESCE(`validation_status`, '') != 'INVALID'"
        if not_changed_since is not None:
            sql += " AND `updated_at` <= @since"
            params["since"] = not_changed_since
        count = self.central.queries.dml(sql, params)
        log.info("credential validation recorded", org_slug=org_slug, provider=names[0], status=status,
                 rows=count)
        return count

    def delete(self, org_slug: str, provider: str) -> bool:
        org_slug, names = validate_org_slug(org_slug), self.names(provider)
        provider = names[0]
        count = self.central.queries.dml(
            f"UPDATE {self.central.ref(TABLE)} SET `is_active` = FALSE, `updated_at` = @now "  # noqa: S608
            "WHERE `org_slug` = @org_slug AND `provider` IN UNNEST(@providers) AND `is_active` = TRUE",
            {"org_slug": org_slug, "providers": names, "now": utcnow()})
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

    def listing(self, org_slug: str) -> list[dict[str, object]]:
        """The org's active credentials for people: canonical provider, status, last validation and error,
        and a fingerprint of the secret (decrypted here, never returned)."""
        org_slug = validate_org_slug(org_slug)
        rows = self.central.queries.rows(
            "SELECT `provider`, `credential_name`, `encrypted_credential`, `validation_status`, "  # noqa: S608
            f"`last_validated_at`, `validation_error`, `updated_at` FROM {self.central.ref(TABLE)} "
            "WHERE `org_slug` = @org_slug AND `is_active` = TRUE ORDER BY `provider`", {"org_slug": org_slug})
        listed = []
        for row in rows:
            try:
                sealed = base64.b64decode(row["encrypted_credential"], validate=True)
                print_ = fingerprint(self.cipher.decrypt(sealed, aad=credential_aad(org_slug, row["provider"]))
                                     .decode("utf-8"))
            except (CipherError, ValueError):
                print_ = "(does not decrypt)"
            listed.append({"provider": self.registry.canonical(str(row["provider"])),
                           "stored_as": row["provider"], "credential_name": row["credential_name"],
                           "fingerprint": print_, "validation_status": row["validation_status"],
                           "last_validated_at": row["last_validated_at"],
                           "validation_error": row["validation_error"], "updated_at": row["updated_at"]})
        return listed
