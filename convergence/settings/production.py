"""Production start-up validation: with ENVIRONMENT=production
the service refuses to start while any security setting is wrong, and lists every problem at once."""

from __future__ import annotations

import ipaddress
import re

from convergence.settings.model import (
    EXIT_MARGIN_SECONDS,
    MIN_FLUSH_SECONDS,
    PLATFORM_STOP_SECONDS,
    Settings,
    SettingsError,
)

MIN_ROOT_KEY_LENGTH = 32
_KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")


def _is_local(endpoint: str) -> bool:
    host = endpoint.split("://")[-1].split("/")[0].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def production_problems(settings: Settings) -> list[str]:
    """Every reason these settings must not run in production (empty when they may)."""
    problems: list[str] = []
    root_key = settings.ca_root_api_key.get_secret_value() if settings.ca_root_api_key else ""
    if not root_key:
        problems.append("CA_ROOT_API_KEY is required in production")
    elif len(root_key) < MIN_ROOT_KEY_LENGTH:
        problems.append(f"CA_ROOT_API_KEY must be at least {MIN_ROOT_KEY_LENGTH} characters "
                        f"(it has {len(root_key)})")
    if settings.disable_auth:
        problems.append("DISABLE_AUTH must be false in production")
    if "*" in settings.cors_origins:
        problems.append('CORS_ORIGINS must list the allowed origins in production, not "*"')
    if settings.require_signed_requests and not settings.request_signing_keys:
        problems.append("REQUIRE_SIGNED_REQUESTS needs REQUEST_SIGNING_KEYS")
    if any(len(key.get_secret_value()) < 32 for key in settings.request_signing_keys):
        problems.append("every REQUEST_SIGNING_KEYS key must be at least 32 characters")
    if not settings.rate_limit_enabled:
        problems.append("RATE_LIMIT_ENABLED must be true in production")
    if not settings.kms_key_name:
        problems.append("KMS_KEY_NAME is required in production (credentials are encrypted with Cloud KMS)")
    elif not _KMS_KEY.fullmatch(settings.kms_key_name):
        problems.append("KMS_KEY_NAME must be projects/P/locations/L/keyRings/R/cryptoKeys/K")
    if settings.kms_endpoint and _is_local(settings.kms_endpoint):
        problems.append("KMS_ENDPOINT points at a local stand-in; unset it in production")
    if settings.pubsub_emulator_host:
        problems.append("PUBSUB_EMULATOR_HOST must not be set in production")
    if settings.bigquery_emulator_host:
        problems.append("BIGQUERY_EMULATOR_HOST must not be set in production")
    longest_grace = PLATFORM_STOP_SECONDS - EXIT_MARGIN_SECONDS - MIN_FLUSH_SECONDS
    if settings.shutdown_grace_seconds > longest_grace:
        problems.append(f"SHUTDOWN_GRACE_SECONDS must be at most {longest_grace:g} in production (it is "
                        f"{settings.shutdown_grace_seconds:g}): Cloud Run kills the process "
                        f"{PLATFORM_STOP_SECONDS:g} s after SIGTERM, and run-log rows and events must be flushed")
    return problems


def validate_for_startup(settings: Settings) -> None:
    """Raise SettingsError listing every problem when ENVIRONMENT=production and the settings are unsafe."""
    if not settings.is_production:
        return
    problems = production_problems(settings)
    if problems:
        raise SettingsError("production configuration invalid:\n" + "\n".join(f"  - {p}" for p in problems))
