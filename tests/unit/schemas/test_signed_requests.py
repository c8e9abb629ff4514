"""Signed run requests: with REQUIRE_SIGNED_REQUESTS the consumer runs only requests whose body one of
REQUEST_SIGNING_KEYS signed; the rest are rejected (acked, never run), filed under the unknown org."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import SecretStr

from convergence.schemas import RunRequest
from convergence.schemas.errors import UNKNOWN_ORG
from convergence.schemas.signing import SIGNATURE_ATTRIBUTE, sign, verify
from convergence.settings.model import load_settings
from convergence.settings.production import production_problems
from tests.harness import Platform

KEY = "k" * 40
OLD = "o" * 40


def test_sign_and_verify_with_rotation():
    body = RunRequest.create("acme", "testing/consumer/ok").to_json()
    verify(body, {SIGNATURE_ATTRIBUTE: sign(body, OLD.encode())}, [KEY.encode(), OLD.encode()])  # rotated out
    for attributes, reason in (({}, "not signed"), ({SIGNATURE_ATTRIBUTE: "v1=00"}, "does not match"),
                               ({SIGNATURE_ATTRIBUTE: sign(body + b" ", KEY.encode())}, "does not match")):
        with pytest.raises(Exception, match=reason) as refused:
            verify(body, attributes, [KEY.encode()])
        assert refused.value.code.value == "SIGNATURE_INVALID"


def test_production_refuses_required_signing_without_a_good_key():
    problems = production_problems(load_settings(require_signed_requests=True))
    assert "REQUIRE_SIGNED_REQUESTS needs REQUEST_SIGNING_KEYS" in problems
    short = production_problems(load_settings(request_signing_keys=[SecretStr("short")]))
    assert "every REQUEST_SIGNING_KEYS key must be at least 32 characters" in short


@pytest.mark.emulator
def test_the_consumer_runs_signed_requests_only(local_stack, tmp_path):
    platform = Platform(local_stack, tmp_path, require_signed_requests=True,
                        request_signing_keys=[SecretStr(KEY), SecretStr(OLD)])
    try:
        platform.onboard("signed_org")
        platform.start_consumer()
        signed = platform.publish("signed_org", "testing/consumer/ok", {"seconds": 0})  # the publisher signs
        assert platform.run_record(signed, status="SUCCESS").org_slug == "signed_org"

        request = RunRequest.create("signed_org", "testing/consumer/ok", {"seconds": 0},
                                    run_id=f"run_{uuid.uuid4().hex}")
        unsigned = request.run_id
        platform.publish_raw(request.to_json(), **request.attributes())
        forged = json.loads(request.to_json()) | {"run_id": f"run_{uuid.uuid4().hex}"}
        body = json.dumps(forged, separators=(",", ":")).encode()
        platform.publish_raw(body, **(request.attributes() | {"run_id": forged["run_id"],
                                                               SIGNATURE_ATTRIBUTE: sign(b"other", KEY.encode())}))
        for run_id in (unsigned, forged["run_id"]):
            record = platform.run_record(run_id, status="REJECTED")
            assert (record.error_code, record.org_slug) == ("SIGNATURE_INVALID", UNKNOWN_ORG)
            assert platform.services.runlog.latest_run(run_id, org_slug="signed_org") is None
    finally:
        platform.close()
