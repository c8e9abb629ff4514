"""The Anthropic admin API requests shared by the anthropic.* ps_types (not a ps_type: the underscore keeps
it out of the registry): headers, the RFC 3339 window and a report bucket's day."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convergence.processors._dates import DateRange
from convergence.processors._llm.values import parse_rfc3339

USER_AGENT = "convergence/0.1 (usage-cost pipelines)"
API_VERSION = "2023-06-01"


def rfc3339_window(dates: DateRange) -> list[tuple[str, str]]:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return [("starting_at", dates.start_datetime().strftime(fmt)), ("ending_at", dates.end_datetime().strftime(fmt))]


def admin_headers(secret: str, config: Mapping[str, Any]) -> dict[str, str]:
    headers = {"x-api-key": secret, "anthropic-version": str(config.get("anthropic_version") or API_VERSION),
               "User-Agent": USER_AGENT}
    if config.get("anthropic_beta"):
        headers["anthropic-beta"] = str(config["anthropic_beta"])
    return headers


def bucket_day(bucket: dict[str, Any], index: int) -> tuple[str, str, str]:
    start = parse_rfc3339(bucket.get("starting_at"), f"data[{index}].starting_at")
    end = parse_rfc3339(bucket.get("ending_at"), f"data[{index}].ending_at")
    return start.date().isoformat(), start.isoformat(), end.isoformat()
