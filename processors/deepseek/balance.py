"""ps_type `deepseek.balance`: the account balance now (`GET /user/balance`), one row per currency, into
`deepseek_balance_snapshots` for today's UTC date.

The balance is the only accounting DeepSeek's API serves, and only as of the moment of the call: a past
day cannot be fetched again, so this step ignores the run's date range and writes today's snapshot. The
write replaces the org's rows for today (range_replace): a re-run the same day leaves one snapshot, the
latest. Amounts are decimal strings ("110.00"), kept exact (NUMERIC).

Config (all optional): secret_name (default `deepseek`; else the credential store), retry,
rate_limit_per_second, destination {table, schema_file, partitioning, clustering}.
(The base URL is the setting DEEPSEEK_BASE_URL, never step config.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._dates import DateRange
from convergence.processors._llm.bq import identifier
from convergence.processors._llm.client import MalformedPage, http_client, provider_secret
from convergence.processors._llm.extract import require_dict, require_list
from convergence.processors._llm.sink import StreamingWrite
from convergence.processors._llm.values import BadValue, numeric_text, to_decimal, usd_text
from convergence.processors.deepseek._api import CREDENTIAL_PROVIDER, PROVIDER, bearer_headers

DEFAULT_TABLE = "deepseek_balance_snapshots"
DEFAULT_SCHEMA = "configs/deepseek/schemas/deepseek_balance_snapshots.json"


def now() -> datetime:
    """The observation time (one place, so tests can move the clock)."""
    return datetime.now(UTC)


def _amount(info: dict[str, Any], name: str, where: str) -> Decimal:
    value = info.get(name)
    if not isinstance(value, str):  # documented as a decimal string; a float would already be rounded
        raise BadValue(f"{where}.{name} is {value!r}, not a decimal string")
    return to_decimal(value, f"{where}.{name}")


def balance_rows(body: Any, context: RunContext, observed: datetime) -> list[dict[str, Any]]:
    body = require_dict(body, "response")
    available = body.get("is_available")
    if not isinstance(available, bool):
        raise BadValue(f"is_available is {available!r}, not true/false")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw in enumerate(require_list(body.get("balance_infos"), "balance_infos")):
        where = f"balance_infos[{index}]"
        info = require_dict(raw, where)
        currency = info.get("currency")
        if not isinstance(currency, str) or not currency.strip():
            raise BadValue(f"{where}.currency is {currency!r}")
        currency = currency.strip().upper()
        if currency in seen:
            raise BadValue(f"{where}: currency {currency} listed twice")
        seen.add(currency)
        rows.append({
            "org_slug": context.org_slug, "snapshot_date": observed.date().isoformat(),
            "observed_at": observed.isoformat(), "currency": currency, "is_available": available,
            "total_balance": numeric_text(_amount(info, "total_balance", where)),
            "granted_balance": numeric_text(_amount(info, "granted_balance", where)),
            "topped_up_balance": numeric_text(_amount(info, "topped_up_balance", where)),
            "run_id": context.run_id, "ingested_at": observed.isoformat(),
        })
    return rows


class DeepSeekBalance:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        services = context.services
        destination = config.get("destination") or {}
        table = identifier(destination.get("table", DEFAULT_TABLE))
        secret = await provider_secret(config, context, CREDENTIAL_PROVIDER)
        http = http_client(context, PROVIDER, config)
        url = f"{str(services.settings.deepseek_base_url).rstrip('/')}/user/balance"
        body, _ = await http.request_json("GET", url, headers=bearer_headers(secret))
        observed = now()
        try:
            rows = balance_rows(body, context, observed)
        except BadValue as error:
            raise MalformedPage(f"{PROVIDER}: malformed balance from {url}: {error}") from None
        day = observed.date()
        sink = StreamingWrite(services, org_slug=context.org_slug, dataset=services.org_dataset(context.org_slug),
                              table=table, schema_path=str(destination.get("schema_file", DEFAULT_SCHEMA)),
                              date_column="snapshot_date", date_range=DateRange(day, day),
                              partitioning=destination.get("partitioning", "snapshot_date"),
                              clustering=destination.get("clustering", ["currency"]))
        try:
            await sink.add_page(rows)
        except BaseException:
            await sink.abort()
            raise
        written = await sink.commit()
        return {
            "status": "SUCCESS", "rows_processed": written, "table": table, "snapshot_date": day.isoformat(),
            "observed_at": observed.isoformat(), "is_available": bool(rows and rows[0]["is_available"]),
            "currencies": ",".join(r["currency"] for r in rows),
            "balances": [{"currency": r["currency"], "total": usd_text(Decimal(r["total_balance"]))} for r in rows],
        }


def get_engine() -> DeepSeekBalance:
    return DeepSeekBalance()
