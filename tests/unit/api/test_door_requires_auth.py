"""The HTTP door honours the pipeline YAML's `requires_auth`: a `requires_auth: false` pipeline is queued and
runs without an org key (a key presented is still verified); every other pipeline still needs one."""

from __future__ import annotations

import pytest

from tests.unit.api.test_http_door import platform, run_path, server  # noqa: F401 - the door's fixtures

pytestmark = [pytest.mark.emulator]
PUBLIC = "testing/consumer/public"


def test_a_pipeline_that_requires_no_auth_runs_without_an_org_key(platform, server):  # noqa: F811
    got, _, answer = server.call("POST", run_path("acme_door", PUBLIC), {}, {"Content-Type": "application/json"})
    assert got == 202, answer
    assert platform.run_record(answer["run_id"], status="SUCCESS").status == "SUCCESS"
    got, _, answer = server.call("POST", run_path("acme_door", PUBLIC), {}, {"X-API-Key": "acme_door_api_" + "x" * 16})
    assert (got, answer["code"]) == (401, "API_KEY_INVALID")  # a key presented is verified
    got, _, answer = server.call("POST", run_path("acme_door", PUBLIC), {}, {"X-API-Key": platform.keys["other_door"]})
    assert (got, answer["code"]) == (403, "API_KEY_WRONG_ORG")
    for pipeline in ("testing/consumer/ok", "testing/consumer/nope"):  # needs a key; unknown: 401 before 404
        got, _, answer = server.call("POST", run_path("acme_door", pipeline), {}, {})
        assert (got, answer["code"]) == (401, "API_KEY_MISSING"), pipeline
    got, _, answer = server.call("POST", run_path("ghost_door", PUBLIC), {}, {})
    assert got == 403 and answer["code"] == "ORG_NOT_FOUND"  # the org gate still decides


def test_a_run_once_pipeline_answers_409_at_the_door_once_it_ran_unless_forced(platform, server):  # noqa: F811
    from tests.unit.api.test_http_door import key_of

    once = run_path("other_door", "testing/consumer/once")
    got, _, answer = server.call("POST", once, {}, key_of(platform, "other_door"))
    assert got == 202, answer
    platform.run_record(answer["run_id"], status="SUCCESS")
    got, _, answer = server.call("POST", once, {}, key_of(platform, "other_door"))
    assert (got, answer["code"]) == (409, "ALREADY_RAN") and "force" in answer["detail"]
    got, _, answer = server.call("POST", once, {"parameters": {"force": "yes"}}, key_of(platform, "other_door"))
    assert got == 202, answer
    assert platform.run_record(answer["run_id"], status="SUCCESS").status == "SUCCESS"
