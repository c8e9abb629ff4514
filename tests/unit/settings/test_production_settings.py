"""Production start-up validation: every problem is listed at once."""

from __future__ import annotations

import pytest

from convergence.settings.model import SettingsError, load_settings
from convergence.settings.production import production_problems, validate_for_startup

GOOD = {
    "environment": "production", "ca_root_api_key": "k" * 32, "disable_auth": False, "rate_limit_enabled": True,
    "kms_key_name": "projects/p/locations/us/keyRings/r/cryptoKeys/k", "pubsub_emulator_host": None,
    "bigquery_emulator_host": None, "kms_endpoint": None,
}


def test_valid_production_settings_start():
    settings = load_settings(**GOOD)
    assert production_problems(settings) == []
    validate_for_startup(settings)


def test_every_problem_is_listed_at_once():
    settings = load_settings(**{**GOOD, "ca_root_api_key": None, "disable_auth": True, "rate_limit_enabled": False,
                                "kms_key_name": None, "pubsub_emulator_host": "127.0.0.1:8085",
                                "bigquery_emulator_host": "127.0.0.1:9050"})
    with pytest.raises(SettingsError) as caught:
        validate_for_startup(settings)
    message = str(caught.value)
    for expected in ("CA_ROOT_API_KEY is required", "DISABLE_AUTH must be false", "RATE_LIMIT_ENABLED must be true",
                     "KMS_KEY_NAME is required", "PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
        assert expected in message
    assert len(production_problems(settings)) == 6


@pytest.mark.parametrize(("override", "expected"), [
    ({"ca_root_api_key": "short-key"}, "at least 32 characters (it has 9)"),
    ({"kms_key_name": "my-key"}, "KMS_KEY_NAME must be projects/P"),
    ({"kms_endpoint": "127.0.0.1:9060"}, "KMS_ENDPOINT points at a local stand-in"),
    # 10 s to SIGKILL, 1 s for the exit, 2 s for the flush: a longer grace would lose the flush
    ({"shutdown_grace_seconds": 7.5}, "SHUTDOWN_GRACE_SECONDS must be at most 7 in production (it is 7.5)"),
])
def test_single_problems(override, expected):
    problems = production_problems(load_settings(**{**GOOD, **override}))
    assert len(problems) == 1 and expected in problems[0]
    assert "short-key" not in problems[0]  # the key itself is never echoed


def test_a_grace_of_7_s_still_fits_the_stop_window():
    assert load_settings(**{**GOOD, "shutdown_grace_seconds": 7}).shutdown_grace_seconds == 7
    assert production_problems(load_settings(**{**GOOD, "shutdown_grace_seconds": 7})) == []


def test_other_environments_are_not_checked():
    validate_for_startup(load_settings(environment="development", disable_auth=True, rate_limit_enabled=False))
