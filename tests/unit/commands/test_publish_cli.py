"""`convergence publish run`: publishing from the library and the CLI runs pipelines; `--wait` follows the
run's events step by step and exits 0 on SUCCESS, non-zero on FAILED/TIMEOUT/REJECTED/DEAD_LETTERED, 3
when it stops waiting; backfills publish one run per day and follow them all."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner

from convergence.commands.publish import backfill_days, parse_param, publish
from convergence.publisher.follow import Final, ProgressPrinter, RunFollower, RunProgress, exit_code
from convergence.schemas import EventType, PipelineEvent
from convergence.schemas.events import EventError

# ---- unit ----------------------------------------------------------------------------------------------


def test_param_parsing():
    assert parse_param("n=3") == ("n", 3)
    assert parse_param("flag=true") == ("flag", True)
    assert parse_param("day=2026-01-01") == ("day", "2026-01-01")
    assert parse_param("name=007") == ("name", "007")
    assert parse_param("obj={\"a\": 1}") == ("obj", "{\"a\": 1}")
    assert parse_param("empty=") == ("empty", "")


def test_backfill_days():
    from datetime import date

    assert backfill_days(date(2026, 1, 30), date(2026, 2, 2)) == [date(2026, 1, 30), date(2026, 1, 31),
                                                                  date(2026, 2, 1), date(2026, 2, 2)]
    assert backfill_days(None, None) == []


def event(kind, **fields):
    base = {"run_id": "run_12345678", "org_slug": "acme", "pipeline": "a/b/c"}
    return PipelineEvent(event_type=kind, **{**base, **fields})


def test_progress_follows_attempts_and_retryable_failures():
    run = RunProgress("run_12345678")
    assert not run.apply(event(EventType.PIPELINE_STARTED, attempt=1, details={"steps": ["a", "b"]}))
    run.apply(event(EventType.STEP_COMPLETED, step_id="a", status="SUCCESS", rows_processed=5))
    failed = EventError(code="PROVIDER_UNAVAILABLE", message="503", retryable=True)
    assert not run.apply(event(EventType.PIPELINE_COMPLETED, status="FAILED", error=failed))  # will be redelivered
    run.apply(event(EventType.PIPELINE_STARTED, attempt=2, details={"steps": ["a", "b"]}))
    assert run.attempt == 2 and run.rows == 0 and run.steps_done == 0
    dead = EventError(code="DEAD_LETTERED", message="gave up")
    assert run.apply(event(EventType.DEAD_LETTERED, error=dead)) and run.final is Final.DEAD_LETTERED
    assert exit_code([run]) == 1
    assert exit_code([RunProgress("x", final=Final.SUCCESS)]) == 0
    assert exit_code([RunProgress("x", final=Final.SUCCESS), RunProgress("y", final=Final.WAIT_TIMEOUT)]) == 3


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere():
    follower = RunFollower.__new__(RunFollower)
    follower.runs = {}
    run = RunProgress("run_12345678", "run_12345678")
    follower.runs[run.run_id] = run
    for tty in (True, False):
        out = io.StringIO()
        printer = ProgressPrinter(follower, out, tty=tty, width=10)
        started = event(EventType.PIPELINE_STARTED, attempt=1, details={"steps": ["a", "b"]})
        run.apply(started)
        printer(run, started)
        done = event(EventType.STEP_COMPLETED, step_id="a", status="SUCCESS", rows_processed=5, duration_ms=1200)
        run.apply(done)
        printer(run, done)
        printer.finish()
        text = out.getvalue()
        assert "step a SUCCESS 5 rows 1.2s" in text
        if tty:
            assert "\r\x1b[K" in text and "[#####-----] 1/2 steps" in text
        else:
            assert "\x1b" not in text and "#" not in text


# ---- on the emulators ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    platform = Platform(local_stack, tmp_path_factory.mktemp("publish"))
    platform.onboard("acme_pub")
    platform.onboard("paused_pub", status="SUSPENDED")
    platform.start_consumer()
    yield platform
    platform.close()


@pytest.fixture
def cli(platform, monkeypatch):
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)

    def invoke(*args: str):
        return CliRunner().invoke(publish, ["run", *args], catch_exceptions=False)

    return invoke


def published_ids(output: str) -> list[str]:
    return re.findall(r"^published (run_[0-9a-f]{32})", output, flags=re.MULTILINE)


def follower_subscriptions(platform) -> list[str]:
    from convergence.infra.clients import subscriber_client

    subscriber = subscriber_client(platform.settings)
    try:
        topic = platform.settings.topic_path(platform.settings.events_topic)  # this platform's, not others'
        return [s.name for s in subscriber.list_subscriptions(project=f"projects/{platform.settings.gcp_project_id}")
                if "/follow-" in s.name and s.topic == topic]
    finally:
        subscriber.close()


@pytest.mark.emulator
def test_library_publish_runs_the_pipeline(platform):
    run_id = platform.services.requests.publish_run("acme_pub", "testing/consumer/ok", {"seconds": 0})
    events = platform.follower.wait_for(run_id, "pipeline_completed")
    assert events[-1]["status"] == "SUCCESS"


@pytest.mark.emulator
def test_wait_prints_each_step_and_exits_0_on_success(platform, cli):
    result = cli("acme_pub", "testing/consumer/ok", "--param", "seconds=0", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"started: 2 step\(s\) first, second", out)
    assert "step first SUCCESS 3 rows" in out and "step second SUCCESS 4 rows" in out
    assert "SUCCESS 7 rows" in out and "1 run(s): 1 SUCCESS" in out
    [run_id] = published_ids(out)
    assert platform.run_record(run_id, status="SUCCESS").trigger == "adhoc"
    assert follower_subscriptions(platform) == []  # the temporary subscription is gone


@pytest.mark.emulator
@pytest.mark.parametrize(("org", "pipeline", "expected"), [
    ("acme_pub", "testing/consumer/permanent", "FAILED"),
    ("acme_pub", "testing/consumer/timeout", "TIMEOUT"),
    ("paused_pub", "testing/consumer/ok", "REJECTED"),
])
def test_wait_exits_1_when_the_run_does_not_succeed(cli, org, pipeline, expected):
    result = cli(org, pipeline, "--wait", "--timeout", "60")
    assert result.exit_code == 1, result.output
    assert f"1 run(s): 1 {expected}" in result.output
    if expected == "FAILED":
        assert "step extract FAILED" in result.output and "PROVIDER_AUTH_FAILED" in result.output


@pytest.mark.emulator
@pytest.mark.slow
def test_wait_exits_1_when_dead_lettered(cli):
    result = cli("acme_pub", "testing/consumer/transient", "--wait", "--timeout", "90")
    assert result.exit_code == 1, result.output
    assert "retryable: Pub/Sub will deliver it again" in result.output
    assert "1 run(s): 1 DEAD_LETTERED" in result.output


@pytest.mark.emulator
def test_wait_timeout_exits_3(cli):
    result = cli("acme_pub", "testing/consumer/ok", "--param", "seconds=6", "--wait", "--timeout", "2")
    assert result.exit_code == 3, result.output
    assert "WAIT_TIMEOUT" in result.output


@pytest.mark.emulator
def test_backfill_publishes_one_run_per_day_and_follows_them_all(platform, cli):
    result = cli("acme_pub", "testing/consumer/ok", "--from", "2026-01-30", "--to", "2026-02-01",
                 "--date-param", "date", "--param", "seconds=0", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "3 run(s): 3 SUCCESS" in result.output
    assert "2026-01-31:   step first SUCCESS 3 rows" in result.output
    run_ids = published_ids(result.output)
    assert len(run_ids) == 3
    records = [platform.run_record(run_id, status="SUCCESS") for run_id in run_ids]
    assert sorted(r.parameters["date"] for r in records) == ["2026-01-30", "2026-01-31", "2026-02-01"]
    assert {r.trigger for r in records} == {"backfill"}


@pytest.mark.emulator
@pytest.mark.parametrize("args", [
    ("Not-An-Org", "testing/consumer/ok"),
    ("acme_pub", "testing/consumer/nope"),
    ("acme_pub", "Testing/x/y"),
    ("acme_pub", "testing/consumer/ok", "--param", "run_id=x"),
])
def test_invalid_input_exits_2_and_publishes_nothing(cli, args):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "published" not in result.output


@pytest.mark.emulator
def test_json_parameters_file(platform, cli, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"seconds": 0, "echo": "from-json"}))
    result = cli("acme_pub", "testing/consumer/ok", "--params-file", str(params), "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    [run_id] = published_ids(result.output)
    assert platform.run_record(run_id, status="SUCCESS").parameters == {"seconds": 0, "echo": "from-json"}
    # The old name still works, and says it is old.
    old = cli("acme_pub", "testing/consumer/ok", "--json", str(params))
    assert old.exit_code == 0 and "now --params-file" in old.output, old.output
    both = cli("acme_pub", "testing/consumer/ok", "--json", str(params), "--params-file", str(params))
    assert both.exit_code == 2 and "old name of --params-file" in both.output
