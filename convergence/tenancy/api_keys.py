"""Org API keys: `{org_slug}_api_{16 random chars}`, stored as a SHA256 hash plus a KMS-encrypted
copy, shown once. Verification hashes the presented key and compares it in constant time with the org's
active key hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from google.cloud import bigquery

from convergence.kms import Cipher
from convergence.settings import Settings
from convergence.tenancy.central import Central, utcnow
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 16
_SEPARATOR = "_api_"
TABLE = "org_api_keys"
ROW_TYPES = {"org_api_key_id": "STRING", "org_slug": "STRING", "org_api_key_hash": "STRING",
             "encrypted_org_api_key": "STRING", "key_fingerprint": "STRING", "scopes": "STRING",
             "is_active": "BOOL", "created_at": "TIMESTAMP", "expires_at": "TIMESTAMP"}


def generate_org_api_key(org_slug: str) -> str:
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"{validate_org_slug(org_slug)}{_SEPARATOR}{random_part}"


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def org_slug_from_api_key(api_key: str) -> str | None:
    """The org a key claims to belong to (its prefix), or None if it is not shaped like an org key."""
    org, sep, random_part = api_key.rpartition(_SEPARATOR)
    if not sep or len(random_part) != _RANDOM_CHARS or not random_part.isalnum():
        return None
    try:
        return validate_org_slug(org)
    except InvalidIdentifier:
        return None


def api_key_aad(org_slug: str) -> bytes:
    return f"org_api_key:{org_slug}".encode()


@dataclass(frozen=True)
class IssuedApiKey:
    org_slug: str
    org_api_key_id: str
    fingerprint: str
    api_key: str = field(repr=False)  # shown once, never logged


class OrgApiKeys:
    def __init__(self, client: bigquery.Client, settings: Settings, cipher: Cipher | None = None):
        self.central = Central(client, settings)
        self.cipher = cipher

    def issue(self, org_slug: str, *, scopes: tuple[str, ...] = ("pipelines:run",),
              expires_at: datetime | None = None) -> IssuedApiKey:
        issued, row = self.new_key(org_slug, scopes=scopes, expires_at=expires_at)
        # DML, not streaming: revoking later is an UPDATE.
        self.central.queries.insert(self.central.ref(TABLE), [row], ROW_TYPES)
        self.central.audit(issued.org_slug, "API_KEY_CREATED", resource_type="org_api_key",
                           resource_id=issued.org_api_key_id, actor_type="ROOT")
        return issued

    def new_key(self, org_slug: str, *, scopes: tuple[str, ...] = ("pipelines:run",),
                expires_at: datetime | None = None) -> tuple[IssuedApiKey, dict[str, object]]:
        """A new key and its org_api_keys row, not yet written (onboarding writes many in one load job)."""
        org_slug = validate_org_slug(org_slug)
        api_key = generate_org_api_key(org_slug)
        encrypted = None
        if self.cipher is not None:
            encrypted = base64.b64encode(self.cipher.encrypt(api_key.encode(), aad=api_key_aad(org_slug))).decode()
        key_id = uuid.uuid4().hex
        row: dict[str, object] = {
            "org_api_key_id": key_id, "org_slug": org_slug, "org_api_key_hash": hash_api_key(api_key),
            "encrypted_org_api_key": encrypted, "key_fingerprint": api_key[-4:], "scopes": list(scopes),
            "is_active": True, "created_at": utcnow(), "expires_at": expires_at,
        }
        return IssuedApiKey(org_slug, key_id, api_key[-4:], api_key), row

    def verify(self, org_slug: str, api_key: str) -> bool:
        """True when `api_key` is an active, unexpired key of `org_slug`."""
        try:
            org_slug = validate_org_slug(org_slug)
        except InvalidIdentifier:
            return False
        if not isinstance(api_key, str) or org_slug_from_api_key(api_key) != org_slug:
            return False
        presented = hash_api_key(api_key)
        rows = self.central.queries.rows(
            f"SELECT `org_api_key_hash` FROM {self.central.ref(TABLE)} "  # noqa: S608 - validated name
            "WHERE `org_slug` = @org_slug AND `is_active` = TRUE "
            "AND (`expires_at` IS NULL OR `expires_at` > @now)", {"org_slug": org_slug, "now": utcnow()})
        matched = False
        for row in rows:  # compare against every hash: time does not depend on which one matches
            matched |= hmac.compare_digest(presented, str(row["org_api_key_hash"]))
        return matched

    def revoke(self, org_slug: str, org_api_key_id: str | None = None) -> int:
        """Deactivate one key, or every key of the org; returns how many."""
        params = {"org_slug": validate_org_slug(org_slug), "now": utcnow()}
        where = "`org_slug` = @org_slug AND `is_active` = TRUE"
        if org_api_key_id is not None:
            where += " AND `org_api_key_id` = @key_id"
            params["key_id"] = str(org_api_key_id)
        count = self.central.queries.dml(
            f"UPDATE {self.central.ref(TABLE)} SET `is_active` = FALSE, `revoked_at` = @now "  # noqa: S608
            f"WHERE {where}", params)
        if count:
            self.central.audit(org_slug, "API_KEY_REVOKED", resource_type="org_api_key", resource_id=org_api_key_id)
        return count

    def reveal(self, org_slug: str) -> str | None:
        """Decrypt the org's newest active key (local and development only)."""
        if self.central.settings.is_production:
            raise PermissionError("org API keys are never revealed in production")
        if self.cipher is None:
            raise ValueError("a cipher is needed to reveal a key")
        org_slug = validate_org_slug(org_slug)
        rows = self.central.queries.rows(
            f"SELECT `encrypted_org_api_key` FROM {self.central.ref(TABLE)} "  # noqa: S608 - validated name
            "WHERE `org_slug` = @org_slug AND `is_active` = TRUE AND `encrypted_org_api_key` IS NOT NULL "
            "ORDER BY `created_at` DESC LIMIT 1", {"org_slug": org_slug})
        if not rows:
            return None
        sealed = base64.b64decode(rows[0]["encrypted_org_api_key"])
        return self.cipher.decrypt(sealed, aad=api_key_aad(org_slug)).decode()


def verify_org_api_key(client: bigquery.Client, settings: Settings, org_slug: str, api_key: str) -> bool:
    return OrgApiKeys(client, settings).verify(org_slug, api_key)


__all__ = ["IssuedApiKey", "OrgApiKeys", "generate_org_api_key", "hash_api_key", "org_slug_from_api_key",
           "verify_org_api_key"]
