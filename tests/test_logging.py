"""Log lines in Cloud Logging's shape, with run ids bound to every line and secrets masked."""

import json

import structlog

from observability.logging import configure_logging, run_context


def capture(capsys, fn):
    configure_logging("INFO", "json", project_id="proj-test")
    fn()
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_json_lines_have_severity_message_and_trace(capsys):
    def emit():
        with run_context(run_id="run_1", org_slug="acme", trace_id="abc123"):
            structlog.get_logger("t").warning("step failed", step_id="extract")
        structlog.get_logger("t").info("outside")

    inside, outside = capture(capsys, emit)
    assert inside["severity"] == "WARNING" and inside["message"] == "step failed"
    assert inside["run_id"] == "run_1" and inside["org_slug"] == "acme" and inside["step_id"] == "extract"
    assert inside["logging.googleapis.com/trace"] == "projects/proj-test/traces/abc123"
    assert "run_id" not in outside and outside["severity"] == "INFO"


def test_secret_looking_fields_are_masked(capsys):
    def emit():
        structlog.get_logger("t").info("calling", api_key="sk-live-123", token="t0k3n", credential_id="cred_9")

    (line,) = capture(capsys, emit)
    assert line["api_key"] == "[REDACTED]" and line["token"] == "[REDACTED]"
    assert line["credential_id"] == "cred_9"  # ids are not secrets
    assert "sk-live-123" not in json.dumps(line)
