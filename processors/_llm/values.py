"""Value handling for provider payloads: model snapshot names, exact decimals, strict integers, timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# OpenAI snapshots end in -YYYY-MM-DD (gpt-4o-mini-2024-07-18), Anthropic's in -YYYYMMDD (claude-sonnet-4-20250514).
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
NUMERIC_QUANTUM = Decimal("0.000000001")  # BigQuery NUMERIC keeps 9 decimal places


def model_base(model: str | None) -> str | None:
    """The model family a price list names: the dated snapshot suffix removed (fine-tunes kept as they are)."""
    if model is None:
        return None
    if model.startswith("ft:"):
        return model
    return _SNAPSHOT.sub("", model)


class BadValue(ValueError):
    pass


def to_decimal(value: Any, what: str) -> Decimal:
    """A money amount from JSON: a number or a decimal string ("0.0000045000...", "0E-6176"), never a float
    computation. Floats arrive already parsed; their shortest repr is the decimal the provider sent."""
    if isinstance(value, bool) or value is None:
        raise BadValue(f"{what} is {value!r}, not a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise BadValue(f"{what} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise BadValue(f"{what} {value!r} is not finite")
    return number


def numeric_text(value: Decimal) -> str:
    """A Decimal as text that a BigQuery NUMERIC column accepts (9 decimal places, no exponent)."""
    quantized = value.quantize(NUMERIC_QUANTUM)
    return format(quantized, "f") if quantized != 0 else "0"


def usd_text(value: Decimal | None) -> str | None:
    """Money for results and events: USD rounded half-up to the cent, as text ("12.35")."""
    if value is None:
        return None
    return format(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "f")


def to_int(value: Any, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadValue(f"{what} is {value!r}, not an integer")
    return value


def epoch_to_iso(seconds: Any, what: str) -> str:
    number = to_int(seconds, what)
    assert number is not None
    return datetime.fromtimestamp(number, UTC).isoformat()


def parse_rfc3339(text: Any, what: str) -> datetime:
    if not isinstance(text, str) or "T" not in text:
        raise BadValue(f"{what} {text!r} is not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadValue(f"{what} {text!r} is not an RFC 3339 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
