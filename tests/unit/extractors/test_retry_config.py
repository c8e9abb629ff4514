"""One retry/rate-limit shape for every API step (extractors.retry); the old spellings still give the
same policy, and `convergence validate` names them as deprecated."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from convergence.cli import _add_command_groups, cli
from convergence.extractors.retry import deprecated_keys, http_limits
from convergence.httpclient import RetryPolicy
from convergence.pipeline.errors import PermanentStepError

NEW = {"rate_limit": {"requests_per_second": 20}, "retry": {"attempts": 3, "initial_seconds": 0.01,
                                                           "max_seconds": 2, "max_retry_after_seconds": 5}}
OLD_GENERIC = {"rate_limit": {"requests_per_second": 20, "max_retries": 2, "initial_backoff_seconds": 0.01,
                              "max_backoff_seconds": 2, "max_retry_after_seconds": 5}}
OLD_LLM = {"rate_limit_per_second": 20, "retry": {"attempts": 3, "initial_seconds": 0.01, "max_seconds": 2,
                                                   "max_retry_after_seconds": 5}}


def test_old_and_new_spellings_give_the_same_limits():
    expected = http_limits(NEW)
    assert expected.rate_per_second == 20
    assert expected.policy == RetryPolicy(attempts=3, initial_seconds=0.01, max_seconds=2, max_retry_after_seconds=5)
    assert http_limits(OLD_GENERIC) == expected
    assert http_limits(OLD_LLM) == expected


def test_defaults_and_no_retry():
    default = RetryPolicy(attempts=6)
    assert http_limits({}, default=default).policy is default
    assert http_limits({}).policy is None  # the HTTP client's own
    assert http_limits({"rate_limit": {"retry_on_429": False}}, default=default).policy.attempts == 1
    assert http_limits({"rate_limit": {"requests_per_second": 5}}, default=default).policy is default


@pytest.mark.parametrize("config,fragment", [
    ({"retry": {"attempts": "many"}}, "retry.attempts 'many' is not a whole number"),
    ({"retry": {"attempts": 0}}, "retry.attempts 0 must be between 1 and 21"),
    ({"rate_limit": {"max_retries": 50}}, "rate_limit.max_retries 50 must be between 0 and 20"),
    ({"retry": [3]}, "retry in the step config must be a mapping"),
    ({"retry": {"attempts": 2}, "rate_limit": {"max_retries": 2}}, "not both"),
])
def test_bad_values_are_clear_config_errors(config, fragment):
    with pytest.raises(PermanentStepError) as caught:
        http_limits(config)
    assert caught.value.code == "CONFIG_INVALID" and fragment in str(caught.value)


def test_deprecated_keys_name_their_replacement():
    assert deprecated_keys(NEW) == []
    assert deprecated_keys(OLD_LLM) == ["rate_limit_per_second is deprecated: use rate_limit.requests_per_second"]
    notes = deprecated_keys(OLD_GENERIC)
    assert "rate_limit.max_retries is deprecated: use retry.attempts (max_retries + 1)" in notes
    assert len(notes) == 4


def test_validate_prints_a_deprecation_and_still_passes(tmp_path):
    path = tmp_path / "configs" / "demo" / "old_retry.yml"
    path.parent.mkdir(parents=True)
    path.write_text("pipeline_id: p-old\nname: old\nsteps:\n  - step_id: s1\n    ps_type: utility.noop\n"
                    "    config:\n      rate_limit: {requests_per_second: 2, max_retries: 3}\n")
    _add_command_groups()
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "configs")])
    assert result.exit_code == 0, result.output
    assert ("deprecated: configs/demo/old_retry.yml [steps.0.config]: rate_limit.max_retries is deprecated: "
            "use retry.attempts (max_retries + 1)") in result.output
    assert "ok: 1 pipeline(s)" in result.output
