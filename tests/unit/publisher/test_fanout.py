"""Scheduler fan-out: a tick -> exactly the due pipelines for exactly the eligible orgs, once.

Unit tests with fakes first (fast), then the real thing on the emulators: eligibility and the ledger on
BigQuery, requests on Pub/Sub, and a tick through the ticks topic and the running consumer."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convergence.pipeline import PipelineLoader
from convergence.publisher.fanout import TickFanOut, scheduled_run_id
from convergence.publisher.requests import PublishError
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
TICK = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # window (04:00, 05:00]

PIPELINES = {
    # due at 04:30, needs OPENAI
    "sched/daily/usage.yml": """
pipeline_id: "{org_slug}-sched-usage"
name: Scheduled usage
integration: OPENAI
schedule: {type: daily, time: "04:30", parameters: {start_date: "{yesterday}", end_date: "{yesterday}"}}
steps:
  - {step_id: work, ps_type: sample.sleep, config: {seconds: 0, rows: 2}}
""",
    # due at 04:45 on the 1st, no integration; empty domain: "sched//monthly"
    "sched/monthly.yml": """
pipeline_id: "{org_slug}-sched-monthly"
name: Scheduled monthly
schedule: {type: monthly, time: "04:45", day_of_month: 1, parameters: {month: "{month}"}}
steps:
  - {step_id: work, ps_type: sample.sleep, config: {seconds: 0, rows: 1}}
""",
    # due at 04:15 (hourly), needs ANTHROPIC
    "sched/hourly/anthropic.yml": """
pipeline_id: "{org_slug}-sched-hourly"
name: Scheduled hourly
integration: ANTHROPIC
schedule: {type: hourly, time: "00:15"}
steps:
  - {step_id: work, ps_type: sample.sleep, config: {seconds: 0, rows: 3}}
""",
    # not due (10:00)
    "sched/daily/later.yml": """
pipeline_id: "{org_slug}-sched-later"
name: Scheduled later
schedule: {type: daily, time: "10:00"}
steps:
  - {step_id: work, ps_type: sample.sleep, config: {seconds: 0}}
""",
    # no schedule at all
    "sched/adhoc/only.yml": """
pipeline_id: "{org_slug}-adhoc"
name: Ad hoc only
steps:
  - {step_id: work, ps_type: sample.sleep, config: {seconds: 0}}
""",
}


def write_configs(root: Path, configs: Path | None = None) -> Path:
    """The test pipelines; with `configs` (a platform's copy of configs/), every other pipeline is removed
    first, so a tick sees the test schedules only."""
    if configs is None:
        configs = root / "configs"
        configs.mkdir(parents=True)
        shutil.copytree(REPO / "configs" / "setup", configs / "setup")
    else:
        for child in configs.iterdir():
            if child.name != "setup":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for name, text in PIPELINES.items():
        path = configs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip(), encoding="utf-8")
    return configs


# ---- unit: fakes ---------------------------------------------------------------------------------------


class FakeLedger:
    def __init__(self):
        self.rows: dict[str, datetime] = {}
        self.lookups = 0

    def already_published(self, run_ids, since=None):
        self.lookups += 1
        return {r for r in run_ids if r in self.rows and (since is None or self.rows[r] >= since)}

    def record(self, requests, slots):
        self.rows.update({r.run_id: slots[r.run_id] for r in requests})


class FakePublisher:
    """publish_request like RequestPublisher: a future per request; after `fail_after` requests, failures."""

    def __init__(self, fail_after: int | None = None):
        self.published = []
        self.fail_after = fail_after
        self.calls = 0

    def publish_request(self, request):
        self.calls += 1
        future = Future()
        if self.fail_after is not None and self.calls > self.fail_after:
            future.set_exception(RuntimeError("unavailable"))
        else:
            self.published.append(request)
            future.set_result(str(self.calls))
        return future


ELIGIBLE = {"OPENAI": ["org_a", "org_b"], None: ["org_a", "org_b", "org_d"], "ANTHROPIC": ["org_a"]}


@pytest.fixture
def loader(tmp_path):
    return PipelineLoader(write_configs(tmp_path))


def fake_fanout(loader, publisher=None, ledger=None, calls=None, chunk=5000):
    calls = calls if calls is not None else []

    def eligible(integration):
        calls.append(integration)
        return ELIGIBLE[integration]

    return TickFanOut(loader, publisher or FakePublisher(), eligible, ledger or FakeLedger(), chunk=chunk)


def test_due_pipelines_for_eligible_orgs_once(loader):
    calls = []
    fanout = fake_fanout(loader, calls=calls, chunk=2)
    report = fanout.fan_out(TICK)
    got = sorted((r.org_slug, r.pipeline) for r in fanout.publisher.published)
    assert got == sorted([("org_a", "sched/daily/usage"), ("org_b", "sched/daily/usage"),
                          ("org_a", "sched//monthly"), ("org_b", "sched//monthly"), ("org_d", "sched//monthly"),
                          ("org_a", "sched/hourly/anthropic")])
    assert sorted(calls, key=str) == sorted(["OPENAI", None, "ANTHROPIC"], key=str)  # one query per integration
    assert report.published == 6 and report.skipped_duplicates == 0
    by = {(r.org_slug, r.pipeline): r for r in fanout.publisher.published}
    usage = by[("org_b", "sched/daily/usage")]
    assert usage.parameters == {"start_date": "2026-02-28", "end_date": "2026-02-28"}
    assert usage.trigger == "scheduled" and usage.requested_by == "scheduler"
    assert usage.run_id == scheduled_run_id("org_b", "sched/daily/usage", datetime(2026, 3, 1, 4, 30, tzinfo=UTC))
    assert by[("org_d", "sched//monthly")].parameters == {"month": "2026-03"}
    # copies of the template are as valid as a request built from scratch
    from convergence.schemas import decode_run_request
    for request in fanout.publisher.published:
        assert decode_run_request(request.to_json(), request.attributes()) == request

    again = fanout.fan_out(TICK)
    assert again.published == 0 and again.skipped_duplicates == 6
    assert len(fanout.publisher.published) == 6


def test_partial_publish_failure_records_what_went_out(loader):
    ledger = FakeLedger()
    failing = fake_fanout(loader, FakePublisher(fail_after=2), ledger)
    with pytest.raises(PublishError):
        failing.fan_out(TICK)
    assert len(ledger.rows) == 2
    retry = fake_fanout(loader, FakePublisher(), ledger)
    report = retry.fan_out(TICK)  # the redelivered tick publishes the rest only
    assert report.published == 4 and report.skipped_duplicates == 2


def test_dry_run_publishes_and_records_nothing(loader):
    fanout = fake_fanout(loader)
    report = fanout.fan_out(TICK, dry_run=True)
    assert report.published == 6 and fanout.publisher.published == [] and fanout.ledger.rows == {}
    assert "would publish" in report.summary()


def test_invalid_org_slug_is_skipped_not_fatal(loader):
    fanout = TickFanOut(loader, FakePublisher(), lambda integration: ["org_a", "Bad Org!"], FakeLedger())
    report = fanout.fan_out(TICK)
    assert {r.org_slug for r in fanout.publisher.published} == {"org_a"} and report.published == 3


def test_tick_time_from_body_or_publish_time():
    from convergence.consumer.ticks import tick_time

    assert tick_time(b'{"tick_at": "2026-03-01T05:00:00Z"}', None) == TICK
    assert tick_time(b"{}", datetime(2026, 3, 1, 5, 0, 7, tzinfo=UTC)) == TICK
    assert tick_time(b"not json", datetime(2026, 3, 1, 5, 0, 59, tzinfo=UTC)) == TICK


# ---- on the emulators ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    root = tmp_path_factory.mktemp("fanout")
    platform = Platform(local_stack, root)
    write_configs(root, platform.settings.configs_dir)
    credentials = platform.services.credentials
    for org, status, providers in (("org_a_fan", "ACTIVE", ["OPENAI", "ANTHROPIC"]), ("org_b_fan", "TRIAL", ["OPENAI"]),
                                   ("org_c_fan", "SUSPENDED", ["OPENAI", "ANTHROPIC"]),
                                   ("org_d_fan", "ACTIVE", []), ("org_e_fan", "ACTIVE", ["OPENAI"])):
        platform.onboard(org, status=status)
        for provider in providers:
            credentials.put(org, provider, f"secret-{org}-{provider}", validation_status="VALID")
    credentials.delete("org_e_fan", "OPENAI")  # removed: no longer eligible for OPENAI pipelines
    yield platform
    platform.close()


def real_fanout(platform):
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.tenancy.eligibility import EligibleOrgs

    s = platform.settings
    eligible = EligibleOrgs(platform.services.bigquery, s)
    return TickFanOut(PipelineLoader(s.configs_dir), platform.services.requests, eligible,
                      ExecutionLedger(platform.services.bigquery, s)), eligible


EXPECTED = sorted([
    ("org_a_fan", "sched/daily/usage"), ("org_b_fan", "sched/daily/usage"),
    ("org_a_fan", "sched//monthly"), ("org_b_fan", "sched//monthly"), ("org_d_fan", "sched//monthly"),
    ("org_e_fan", "sched//monthly"), ("org_a_fan", "sched/hourly/anthropic"),
])


@pytest.mark.emulator
def test_tick_fans_out_exactly_the_due_pipelines_for_the_eligible_orgs(platform, pull_messages):
    fanout, eligible = real_fanout(platform)
    report = fanout.fan_out(TICK)
    assert report.published == len(EXPECTED) and eligible.calls == 3
    assert report.orgs == {"OPENAI": 2, "-": 4, "ANTHROPIC": 1}
    messages = pull_messages(platform.settings, platform.settings.requests_subscription, len(EXPECTED) + 1,
                             timeout=4)
    bodies = [json.loads(m.message.data) for m in messages]
    assert sorted((b["org_slug"], b["pipeline"]) for b in bodies) == EXPECTED
    assert all(b["trigger"] == "scheduled" and m.message.attributes["run_id"] == b["run_id"]
               for b, m in zip(bodies, messages, strict=True))

    # the same tick again (a redelivered or duplicated tick): nothing new
    again = fanout.fan_out(TICK)
    assert again.published == 0 and again.skipped_duplicates == len(EXPECTED)
    assert pull_messages(platform.settings, platform.settings.requests_subscription, 1, timeout=2.5) == []


@pytest.mark.emulator
def test_schedule_tick_command(platform, monkeypatch):
    from click.testing import CliRunner

    from convergence.commands.schedule import schedule

    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)
    at = "2026-04-01T05:00Z"  # another day: usage, monthly and hourly due again
    dry = CliRunner().invoke(schedule, ["tick", "--at", at, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output[dry.output.index("{\n"):])  # log lines may come first
    assert report["published"] == len(EXPECTED) and report["dry_run"] is True
    first = CliRunner().invoke(schedule, ["tick", "--at", at])
    assert first.exit_code == 0, first.output
    assert f"{len(EXPECTED)} run request(s) published" in first.output
    second = CliRunner().invoke(schedule, ["tick", "--at", at])
    assert "0 run request(s) published, 7 already published" in second.output
    due = CliRunner().invoke(schedule, ["due", "--at", at])
    assert "sched/daily/usage" in due.output and "sched/daily/later" not in due.output


@pytest.mark.emulator
@pytest.mark.slow
def test_tick_through_the_ticks_topic_and_the_consumer(platform, pull_messages):
    from convergence.publisher.requests import RequestPublisher

    # drain what the CLI test left on the requests subscription, then let the consumer run the tick's runs
    pull_messages(platform.settings, platform.settings.requests_subscription, 100, timeout=2.5)
    platform.start_consumer()
    tick_at = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # usage (daily) and hourly are due; monthly is not
    body = json.dumps({"tick_at": tick_at.isoformat()}).encode()
    with RequestPublisher(platform.settings, topic=platform.settings.ticks_topic) as ticks:
        for _ in range(2):  # Cloud Scheduler delivers at least once: a duplicate tick
            ticks.publish_raw(body, {}).result(timeout=30)
    expected = {
        scheduled_run_id("org_a_fan", "sched/daily/usage", datetime(2026, 3, 2, 4, 30, tzinfo=UTC)),
        scheduled_run_id("org_b_fan", "sched/daily/usage", datetime(2026, 3, 2, 4, 30, tzinfo=UTC)),
        scheduled_run_id("org_a_fan", "sched/hourly/anthropic", datetime(2026, 3, 2, 4, 15, tzinfo=UTC)),
    }
    for run_id in expected:
        events = platform.follower.wait_for(run_id, "pipeline_completed", timeout=60)
        assert events[-1]["status"] == "SUCCESS", events[-1]
    time.sleep(2)
    for run_id in expected:
        assert sum(e["event_type"] == "pipeline_started" for e in platform.follower.of(run_id)) == 1
    record = platform.run_record(next(iter(expected)), status="SUCCESS")
    assert record.trigger == "scheduled"
