"""The OpenAI admin API requests shared by the openai.* ps_types (not a ps_type: the underscore keeps it
out of the registry): headers, time window and array query parameters."""

from __future__ import annotations

from convergence.processors._dates import DateRange

USER_AGENT = "convergence/0.1 (usage-cost pipelines)"


def array_params(name: str, values: list[str], array_format: str) -> list[tuple[str, str]]:
    key = f"{name}[]" if array_format == "brackets" else name
    return [(key, v) for v in values]


def time_params(dates: DateRange) -> list[tuple[str, str]]:
    return [("start_time", str(int(dates.start_datetime().timestamp()))),
            ("end_time", str(int(dates.end_datetime().timestamp())))]


def bearer_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "User-Agent": USER_AGENT}
