"""Who in an org hears about its failed runs: `org_profiles.admin_email`, the org's SLACK_WEBHOOK credential
(encrypted like every credential) and the org's opt-out `org_profiles.failure_notices`.

`OrgContacts.get(org)` is what the failure hook asks. An org's answer is kept for `cache_seconds`, and the
orgs that need a fresh one while a read is under way share the next read: a burst of failures across many
orgs costs one query per cache period, not one per failure. The webhook URL is a secret: it is held as a
SecretStr and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from convergence.kms import CipherError
from convergence.pipeline.results import RunStatus
from convergence.runtime.batching import MicroBatcher
from convergence.tenancy.central import Central, utcnow
from convergence.tenancy.credentials import TABLE as CREDENTIALS_TABLE
from convergence.tenancy.credentials import credential_aad
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug
from convergence.warehouse.runlog import RUNS_TABLE

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

SLACK_PROVIDER = "SLACK_WEBHOOK"
PROFILES = "org_profiles"
NOTICE_SENT = "FAILURE_NOTICE_SENT"
# Pub/Sub keeps an unacked dead letter at most 7 days (message_retention_duration, "Subscription
# properties" page): an older notice cannot be redelivered.
NOTICE_LOOKBACK = timedelta(days=7)


class OrgNotFound(LookupError):
    """The org has no profile row."""


@dataclass(frozen=True)
class OrgContact:
    org_slug: str
    exists: bool = False
    admin_email: str | None = None
    slack_webhook: SecretStr | None = None
    enabled: bool = True  # the org's opt-out: False when failure_notices is FALSE

    @property
    def reachable(self) -> bool:
        return self.exists and self.enabled and bool(self.admin_email or self.slack_webhook)


def read_contacts(central: Central, cipher: Any, org_slugs: Iterable[str]) -> dict[str, OrgContact]:
    """One query for many orgs: each org's latest profile row and its latest active SLACK_WEBHOOK row."""
    orgs = sorted({validate_org_slug(org) for org in org_slugs})
    if not orgs:
        return {}
    rows = central.queries.rows(
        "SELECT 'profile' AS kind, `org_slug`, `admin_email` AS value, `failure_notices` AS enabled, "  # noqa: S608
        "COALESCE(`updated_at`, `created_at`) AS changed_at FROM " + central.ref(PROFILES) +
        " WHERE `org_slug` IN UNNEST(@orgs) UNION ALL "
        "SELECT 'slack', `org_slug`, `encrypted_credential`, CAST(NULL AS BOOL), `updated_at` FROM " +
        central.ref(CREDENTIALS_TABLE) + " WHERE `org_slug` IN UNNEST(@orgs) AND `provider` = @provider "
        "AND `is_active` = TRUE", {"orgs": orgs, "provider": SLACK_PROVIDER})
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["org_slug"], row["kind"])
        seen = latest.get(key)
        if seen is None or _later(row["changed_at"], seen["changed_at"]):
            latest[key] = row
    out = {}
    for org in orgs:
        profile = latest.get((org, "profile"))
        if profile is None:
            out[org] = OrgContact(org)
            continue
        sealed = latest.get((org, "slack"))
        out[org] = OrgContact(org, True, profile["value"] or None,
                              _open(cipher, org, sealed["value"]) if sealed else None,
                              profile["enabled"] is not False)
    return out


def set_failure_notices(central: Central, org_slug: str, enabled: bool, *, actor_id: str | None = None) -> None:
    """Turn the org's failure notices on or off (one DML UPDATE of its profile; profiles are never streamed,
    so the row is always updatable). OrgNotFound when the org has no profile."""
    org_slug = validate_org_slug(org_slug)
    changed = central.queries.dml(
        f"UPDATE {central.ref(PROFILES)} SET `failure_notices` = @enabled, `updated_at` = @now "  # noqa: S608
        "WHERE `org_slug` = @org_slug", {"enabled": bool(enabled), "now": utcnow(), "org_slug": org_slug})
    if not changed:
        raise OrgNotFound(f"org {org_slug} is not onboarded")
    central.audit(org_slug, "FAILURE_NOTICES_ON" if enabled else "FAILURE_NOTICES_OFF", resource_type="org",
                  resource_id=org_slug, actor_type="ROOT" if actor_id is None else "USER", actor_id=actor_id)


def _open(cipher: Any, org: str, sealed: str) -> SecretStr | None:
    try:
        plain = cipher.decrypt(base64.b64decode(sealed, validate=True), aad=credential_aad(org, SLACK_PROVIDER))
        return SecretStr(plain.decode("utf-8"))
    except (CipherError, ValueError) as error:
        log.warning("the org's Slack webhook credential does not decrypt", org_slug=org, error=type(error).__name__)
        return None


def _later(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and (b is None or a > b)


@dataclass
class _Cached:
    contact: OrgContact
    expires: float


class OrgContacts:
    """Cached, batched `read_contacts` for the failure hook. `services` gives `bigquery`, `settings` and
    `cipher`, reached on the first read only (building this creates no client)."""

    def __init__(self, services: PlatformServices, *, cache_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.services = services
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        # One read at a time: the orgs that fail while it runs wait for the next one, together.
        self._batcher: MicroBatcher[str, OrgContact] = MicroBatcher(self._read_batch, max_delay=0.005,
                                                                    max_size=1000, max_in_flight=1,
                                                                    name="org-contacts")
        self._told: MicroBatcher[tuple[str, str], bool] = MicroBatcher(self._told_batch, max_delay=0.005,
                                                                       max_size=1000, max_in_flight=1,
                                                                       name="notices-told")
        self._central: Central | None = None
        self.reads = 0  # queries sent (tests, benchmark)

    async def get(self, org_slug: str) -> OrgContact:
        """The org's contact; an invalid slug is an org with no contact (never queried)."""
        try:
            org_slug = validate_org_slug(org_slug)
        except InvalidIdentifier:
            return OrgContact(str(org_slug)[:60])
        cached = self._cache.get(org_slug)
        if cached is not None and cached.expires > self.clock():
            return cached.contact
        return await self._batcher.submit(org_slug)

    def forget(self, org_slug: str | None = None) -> None:
        if org_slug is None:
            self._cache.clear()
        else:
            self._cache.pop(org_slug, None)

    async def _read_batch(self, orgs: list[str]) -> list[OrgContact]:
        now = self.clock()
        known = {org: c.contact for org in orgs if (c := self._cache.get(org)) is not None and c.expires > now}
        missing = sorted(set(orgs) - set(known))
        if missing:
            fresh = await asyncio.to_thread(self._read, missing)
            for org, contact in fresh.items():
                self._cache[org] = _Cached(contact, now + self.cache_seconds)
            known.update(fresh)
        if len(self._cache) > 100_000:  # thousands of orgs is normal; unbounded is not
            self._cache = {o: c for o, c in self._cache.items() if c.expires > now}
        return [known[org] for org in orgs]

    async def already_told(self, org_slug: str, run_id: str) -> bool:
        """Whether a notice of this run went out from any process since its latest attempt started (its
        FAILURE_NOTICE_SENT audit row): asked for dead letters, whose redelivery may reach another consumer."""
        return await self._told.submit((validate_org_slug(org_slug), str(run_id)))

    def record_notice(self, org_slug: str, run_id: str, code: str | None, channels: list[str]) -> None:
        """The audit row that says the run's notice went out (channel names only, never an address)."""
        self.central.audit(validate_org_slug(org_slug), NOTICE_SENT, resource_type="pipeline_run",
                           resource_id=run_id, details={"code": code, "channels": channels})

    @property
    def central(self) -> Central:
        if self._central is None:
            self._central = Central(self.services.bigquery, self.services.settings)
        return self._central

    async def _told_batch(self, items: list[tuple[str, str]]) -> list[bool]:
        told = await asyncio.to_thread(self._read_told, items)
        return [item in told for item in items]

    def _read_told(self, items: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The runs with a notice newer than their latest attempt's start: a replay (`convergence dlq
        replay`, same run_id) runs again, so its own outcome is told again."""
        c = self.central
        self.reads += 1
        rows = c.queries.rows(
            "WITH notices AS (SELECT `org_slug`, `resource_id` AS run_id, MAX(`created_at`) AS told_at FROM " +  # noqa: S608
            c.ref("org_audit_logs") + " WHERE `created_at` >= @since AND `org_slug` IN UNNEST(@orgs) "
            "AND `action` = @action AND `resource_id` IN UNNEST(@run_ids) GROUP BY `org_slug`, `resource_id`), "
            "starts AS (SELECT `org_slug`, `run_id`, MAX(`event_time`) AS started_at FROM " + c.ref(RUNS_TABLE) +
            " WHERE `event_time` >= @since AND `org_slug` IN UNNEST(@orgs) AND `run_id` IN UNNEST(@run_ids) "
            "AND `status` = @running GROUP BY `org_slug`, `run_id`) "
            "SELECT n.`org_slug`, n.`run_id` FROM notices AS n LEFT JOIN starts AS s "
            "ON s.`org_slug` = n.`org_slug` AND s.`run_id` = n.`run_id` "
            "WHERE s.`started_at` IS NULL OR n.`told_at` > s.`started_at`",
            {"since": utcnow() - NOTICE_LOOKBACK, "orgs": sorted({org for org, _ in items}),
             "action": NOTICE_SENT, "run_ids": sorted({run for _, run in items}),
             "running": RunStatus.RUNNING.value})
        return {(row["org_slug"], row["run_id"]) for row in rows} & set(items)

    def _read(self, orgs: list[str]) -> dict[str, OrgContact]:
        self.reads += 1
        return read_contacts(self.central, self.services.cipher, orgs)


__all__ = ["SLACK_PROVIDER", "OrgContact", "OrgContacts", "OrgNotFound", "read_contacts", "set_failure_notices"]
