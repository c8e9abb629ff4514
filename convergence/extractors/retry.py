"""The one shape of a step's HTTP retry and rate-limit config, for every ps_type that calls an API:

    retry:                        # every key optional
      attempts: 6                 # tries in all (1: no retry); 429/5xx/network errors are retried
      initial_seconds: 0.5        # first backoff (exponential with jitter)
      max_seconds: 30             # longest backoff
      max_retry_after_seconds: 60 # a longer Retry-After is not waited for: the run fails transiently
    rate_limit:
      requests_per_second: 10

Older spellings still work and `convergence validate` reports them as deprecated (DEPRECATED):
`rate_limit: {max_retries, retry_on_429, initial_backoff_seconds, max_backoff_seconds,
max_retry_after_seconds}` and a top-level `rate_limit_per_second`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convergence.httpclient import RetryPolicy
from convergence.pipeline.errors import ErrorCode, invalid

# old key -> (new key, how an old value becomes the new one)
DEPRECATED = {
    "rate_limit.max_retries": "retry.attempts (max_retries + 1)",
    "rate_limit.retry_on_429": "retry.attempts: 1 (false)",
    "rate_limit.initial_backoff_seconds": "retry.initial_seconds",
    "rate_limit.max_backoff_seconds": "retry.max_seconds",
    "rate_limit.max_retry_after_seconds": "retry.max_retry_after_seconds",
    "rate_limit_per_second": "rate_limit.requests_per_second",
}
# (low, high) of each value; attempts 21 = the old max_retries ceiling of 20 plus the first try.
_BOUNDS = {"attempts": (1, 21), "initial_seconds": (0.0, 60.0), "max_seconds": (0.0, 600.0),
           "max_retry_after_seconds": (0.0, 600.0), "requests_per_second": (0.001, 10_000.0),
           "max_retries": (0, 20), "initial_backoff_seconds": (0.0, 60.0), "max_backoff_seconds": (0.0, 600.0)}
_OLD_RETRY = {"initial_backoff_seconds": "initial_seconds", "max_backoff_seconds": "max_seconds",
              "max_retry_after_seconds": "max_retry_after_seconds"}


@dataclass(frozen=True)
class HttpLimits:
    """What `services.http(provider, rate_per_second=..., policy=...)` takes."""

    rate_per_second: float | None
    policy: RetryPolicy | None


def _mapping(config: Mapping[str, Any], key: str, code: ErrorCode) -> dict[str, Any]:
    value = config.get(key)
    if value is None or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"{key} in the step config must be a mapping", code)
    return dict(value)


def _number(value: Any, name: str, code: ErrorCode, whole: bool = False) -> float:
    if isinstance(value, bool):
        raise invalid(f"{name} {value!r} is not a number", code)
    try:
        number = int(value) if whole else float(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} {value!r} is not a {'whole number' if whole else 'number'}", code) from None
    low, high = _BOUNDS[name.rsplit(".", 1)[-1]]
    if not low <= number <= high:
        raise invalid(f"{name} {number:g} must be between {low:g} and {high:g}", code)
    return number


def _truth(value: Any, name: str, code: ErrorCode) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise invalid(f"{name} {value!r} must be true or false", code)


def deprecated_keys(config: Mapping[str, Any]) -> list[str]:
    """The old spellings a step config uses, each with what replaces it."""
    found = [key for key in DEPRECATED if "." not in key and key in config]
    rate = config.get("rate_limit")
    if isinstance(rate, Mapping):
        found += [f"rate_limit.{key}" for key in rate if f"rate_limit.{key}" in DEPRECATED]
    return [f"{key} is deprecated: use {DEPRECATED[key]}" for key in sorted(found)]


def http_limits(config: Mapping[str, Any], *, default: RetryPolicy | None = None,
                code: ErrorCode = ErrorCode.CONFIG_INVALID) -> HttpLimits:
    """The rate and retry policy of a step config (new or old spelling); `default` without any retry keys
    (None: the HTTP client's own). Bad values raise `invalid` with `code`."""
    rate = _mapping(config, "rate_limit", code)
    retry = _mapping(config, "retry", code)
    old = {k: v for k, v in rate.items() if k in ("max_retries", "retry_on_429", *_OLD_RETRY)}
    if retry and old:
        raise invalid(f"give retry: or the deprecated rate_limit.{sorted(old)[0]}, not both", code)
    per_second = rate.get("requests_per_second")
    if per_second in (None, ""):
        per_second = config.get("rate_limit_per_second")
    rate_per_second = None
    if per_second not in (None, ""):
        rate_per_second = _number(per_second, "rate_limit.requests_per_second", code)
    if old:  # the deprecated spelling, read with its own names (errors name the key the config has)
        retries = _number(old.get("max_retries", 5), "rate_limit.max_retries", code, whole=True)
        if not _truth(old.get("retry_on_429", True), "rate_limit.retry_on_429", code):
            retries = 0
        retry = {"attempts": int(retries) + 1}
        for key, new in _OLD_RETRY.items():
            if key in old:
                retry[new] = _number(old[key], f"rate_limit.{key}", code)
    elif not retry:
        return HttpLimits(rate_per_second, default)
    base = default or RetryPolicy()
    return HttpLimits(rate_per_second, RetryPolicy(
        attempts=int(_number(retry.get("attempts", base.attempts), "retry.attempts", code, whole=True)),
        initial_seconds=_number(retry.get("initial_seconds", base.initial_seconds), "retry.initial_seconds", code),
        max_seconds=_number(retry.get("max_seconds", base.max_seconds), "retry.max_seconds", code),
        max_retry_after_seconds=_number(retry.get("max_retry_after_seconds", base.max_retry_after_seconds),
                                        "retry.max_retry_after_seconds", code),
    ))
