"""`convergence runs gaps ORG PIPELINE`: the days with no successful run, from the run log on the BigQuery
emulator; `--fill` publishes exactly those days as backfill runs through the real consumer, and a second
`--fill` publishes nothing new."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from convergence.commands.runs import fill_run_id, runs
from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus

pytestmark = [pytest.mark.emulator]

ORG, OTHER = "acme_gaps", "other_gaps"
PIPELINE = "testing/consumer/ok"
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 14)


def day(n: int) -> str:
    return (FIRST + timedelta(days=n - 1)).isoformat()  # day(1) is FIRST


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    platform = Platform(local_stack, tmp_path_factory.mktemp("gaps"))
    platform.onboard(ORG)
    platform.start_consumer()
    yield platform
    platform.close()


@pytest.fixture
def cli(platform, monkeypatch):
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)

    def invoke(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(runs, ["gaps", *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def seed(platform, org: str, pipeline: str, parameters: dict, status: RunStatus = RunStatus.SUCCESS,
         trigger: str = "scheduled") -> str:
    runlog = platform.services.runlog
    run_id = f"seed_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    error = None if status is RunStatus.SUCCESS else ErrorInfo(code="PROVIDER_5XX", message="503", retryable=False)
    result = PipelineResult(pipeline_id=f"{org}-testing-consumer-ok", run_id=run_id, org_slug=org, status=status,
                            started_at=now, ended_at=now, duration_ms=5, steps=[], error=error)
    runlog.run_started(run_id=run_id, org_slug=org, pipeline=pipeline, trigger=trigger, attempt=1,
                       parameters=parameters, pipeline_id=result.pipeline_id)
    runlog.run_finished(result, pipeline=pipeline, trigger=trigger, attempt=1, parameters=parameters)
    assert runlog.flush()
    return run_id


def missing(cli, org: str = ORG, pipeline: str = PIPELINE) -> list[str]:
    out = cli(org, pipeline, "--since", FIRST.isoformat(), "--until", LAST.isoformat(), "--json")
    payload = json.loads(out)
    assert (payload["first_day"], payload["last_day"]) == (FIRST.isoformat(), LAST.isoformat())
    return payload["missing"]


def test_gaps_listed_fill_publishes_exactly_them_and_a_second_fill_nothing(platform, cli):
    # day 3: a scheduled run with a 3-day lookback covers days 1..3
    seed(platform, ORG, PIPELINE, {"start_date": day(3), "end_date": day(3), "lookback_days": "3"})
    seed(platform, ORG, PIPELINE, {"start_date": day(5), "end_date": day(6)})  # a manual range
    seed(platform, ORG, PIPELINE, {"date": day(8)})  # one day by `date`
    seed(platform, ORG, PIPELINE, {"start_date": day(9), "end_date": day(9)}, status=RunStatus.FAILED)
    # another org's and another pipeline's successes count for nothing here
    seed(platform, OTHER, PIPELINE, {"start_date": day(10), "end_date": day(14)})
    seed(platform, ORG, "testing/consumer/permanent", {"start_date": day(11), "end_date": day(11)})
    # the scheduled run of day 14 covers 12..14
    seed(platform, ORG, PIPELINE, {"start_date": day(14), "end_date": day(14), "lookback_days": 3})

    gaps = [day(4), day(7), day(9), day(10), day(11)]
    assert missing(cli) == gaps
    table = cli(ORG, PIPELINE, "--since", FIRST.isoformat(), "--until", LAST.isoformat())
    assert re.findall(r"^(\d{4}-\d{2}-\d{2}) ", table, flags=re.MULTILINE) == gaps
    assert "5 day(s) without a successful run" in table

    out = cli(ORG, PIPELINE, "--since", FIRST.isoformat(), "--until", LAST.isoformat(), "--fill",
              "--timeout", "120")
    published = re.findall(r"^published (fill_[0-9a-f]{32}) \(backfill, (\S+)\)", out, flags=re.MULTILINE)
    assert [label for _, label in published] == gaps
    assert [run_id for run_id, _ in published] == [fill_run_id(ORG, PIPELINE, date.fromisoformat(d)) for d in gaps]
    assert "5 run(s): 5 SUCCESS" in out
    assert re.search(r"^\S+: +step first SUCCESS 3 rows", out, flags=re.MULTILINE)  # live progress per run
    for run_id, label in published:
        record = platform.run_record(run_id, status="SUCCESS")
        assert record.trigger == "backfill" and record.parameters == {"start_date": label, "end_date": label}

    assert missing(cli) == []
    again = cli(ORG, PIPELINE, "--since", FIRST.isoformat(), "--until", LAST.isoformat(), "--fill")
    assert "No gaps" in again and "published" not in again
    assert missing(cli, OTHER) == [day(n) for n in range(1, 10)]  # the other org's gaps are its own


def test_named_dates_are_read_on_the_day_the_run_started(platform, cli):
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    seed(platform, "named_gaps", PIPELINE, {"start_date": "yesterday", "end_date": "yesterday"})
    out = cli("named_gaps", PIPELINE, "--since", (yesterday - timedelta(days=1)).isoformat(), "--json")
    assert json.loads(out)["missing"] == [(yesterday - timedelta(days=1)).isoformat()]


@pytest.mark.parametrize("args,message", [
    (("Bad-Org", PIPELINE), "Invalid value for 'ORG'"),
    (("acme_gaps", "testing/consumer/nope"), "error:"),
    (("acme_gaps", PIPELINE, "--since", "soon"), "not a duration"),
    (("acme_gaps", PIPELINE, "--since", "2026-03-10", "--until", "2026-03-01"), "before the first day"),
    (("acme_gaps", PIPELINE, "--since", "800d"), "at most 366"),
    (("acme_gaps", PIPELINE, "--fill", "--json"), "not JSON"),
])
def test_bad_input_is_a_clear_error(cli, args, message):
    result = CliRunner().invoke(runs, ["gaps", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
