"""Per-org pipeline configuration: the same tick gives different orgs different runs (disabled, own time and
parameters, own cron), read in one query for every org; `convergence orgs pipelines` round trip; a disabled
pipeline is refused at the consumer's admission with PIPELINE_DISABLED."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from convergence.pipeline import PipelineLoader
from convergence.publisher.fanout import TickFanOut, scheduled_run_id
from convergence.tenancy import pipeline_configs as pc
from tests.unit.publisher.test_fanout import TICK, FakeLedger, FakePublisher, write_configs

PARIS_0540 = datetime(2026, 3, 1, 4, 40, tzinfo=UTC)  # 05:40 in Paris (UTC+1 in March)


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 3, 1, hour, minute, tzinfo=UTC)


# ---- unit ------------------------------------------------------------------------------------------------


def row(kind, org, pipeline, *, active=True, parameters=None, cron=None, zone=None, changed=at(0, 0)):
    return {"kind": kind, "org_slug": org, "pipeline": pipeline, "is_active": active,
            "parameters": json.dumps(parameters) if parameters is not None else None, "cron_expression": cron,
            "zone": zone, "changed_at": changed}


def test_newest_row_wins_and_a_bad_row_is_an_error_not_a_default():
    configs = pc.from_rows([
        row("config", "org_a", "p/q/r", active=False, changed=at(1, 0)),
        row("config", "org_a", "p/q/r", active=True, changed=at(2, 0)),
        row("schedule", "org_a", "p/q/r", cron="not a cron"),
        row("config", "org_b", "p/q/r", active=False, parameters={"org_slug": "org_a"}),  # a reserved name
        row("config", "org_c", "p/q/r", parameters={"k": "v"}),
        row("schedule", "org_c", "p/q/r", active=False, cron="not a cron", parameters={"bad name": 1}),
    ])
    a, b, c = (configs.get(org, "p/q/r") for org in ("org_a", "org_b", "org_c"))
    assert a.enabled and a.cron is None and "invalid cron expression" in a.error
    assert not b.enabled and b.parameters == {} and "is not allowed" in b.error  # still disabled
    assert c.parameters == {"k": "v"} and c.error is None


@pytest.mark.parametrize(("spec", "kind", "cron"), [
    ("06:30", "daily", "30 6 * * *"), ("06:30", "hourly", "30 * * * *"), ("06:30", "monthly", "30 6 1 * *"),
    ("*/20  9-17 * * 1-5", "daily", "*/20 9-17 * * 1-5"),
])
def test_schedule_spec_to_cron(spec, kind, cron):
    from convergence.pipeline.models import Schedule

    assert pc.schedule_cron(spec, Schedule(type=kind)) == cron


@pytest.mark.parametrize("bad", ["61 * * * *", "* * * *", "0 0 * * * *", "25:00x"])
def test_bad_schedules_are_refused_with_a_message(bad):
    with pytest.raises(pc.OrgConfigError, match="cron expression"):
        pc.schedule_cron(bad, None)


def test_cron_slots_in_the_orgs_zone():
    assert pc.cron_slots("40 5 * * *", "Europe/Paris", at(4, 0), at(5, 0)) == [PARIS_0540]
    assert pc.cron_slots("*/30 * * * *", "UTC", at(4, 0), at(5, 0)) == [at(4, 30), at(5, 0)]
    assert len(pc.cron_slots("* * * * *", "UTC", at(0, 0), at(5, 0))) == pc.MAX_SLOTS_PER_WINDOW


ELIGIBLE = {"OPENAI": ["org_x", "org_y"], None: ["org_x", "org_y", "org_z"], "ANTHROPIC": ["org_x"]}
ORG_ROWS = [
    row("config", "org_x", "sched/daily/usage", active=False),
    row("config", "org_y", "sched/daily/usage", parameters={"start_date": "{month_start}"}),
    row("schedule", "org_y", "sched/daily/usage", cron="40 5 * * *", zone="Europe/Paris"),
    row("schedule", "org_z", "sched/daily/later", cron="*/30 * * * *", zone="UTC"),
    row("config", "org_x", "sched//monthly", parameters={"month": "{previous_month}"}),
    row("config", "org_z", "sched//monthly", parameters={"note": "z"}),
    row("schedule", "org_q", "sched/daily/later", cron="*/30 * * * *", zone="UTC"),  # org_q: not eligible
]


def expected(runs):
    return sorted((org, pipeline, scheduled_run_id(org, pipeline, slot)) for org, pipeline, slot in runs)


EXPECTED = expected([
    ("org_x", "sched//monthly", at(4, 45)), ("org_x", "sched/hourly/anthropic", at(4, 15)),
    ("org_y", "sched/daily/usage", PARIS_0540), ("org_y", "sched//monthly", at(4, 45)),
    ("org_z", "sched//monthly", at(4, 45)), ("org_z", "sched/daily/later", at(4, 30)),
    ("org_z", "sched/daily/later", at(5, 0)),
])


def test_one_tick_different_runs_per_org(tmp_path):
    reads = []

    def org_configs(pipelines, orgs):
        reads.append((sorted(pipelines), sorted(orgs)))
        return pc.from_rows([r for r in ORG_ROWS if r["org_slug"] in orgs])

    publisher = FakePublisher()
    fanout = TickFanOut(PipelineLoader(write_configs(tmp_path)), publisher, lambda i: ELIGIBLE[i], FakeLedger(),
                        org_configs=org_configs)
    report = fanout.fan_out(TICK)
    got = sorted((r.org_slug, r.pipeline, r.run_id) for r in publisher.published)
    assert got == EXPECTED
    assert len(reads) == 1  # one read for every org and pipeline, for the orgs that may run
    assert "sched/adhoc/only" in reads[0][0] and reads[0][1] == ["org_x", "org_y", "org_z"]
    assert (report.disabled, report.rescheduled, report.own_schedule, report.own_parameters) == (1, 1, 3, 3)
    usage = next(r for r in publisher.published if r.pipeline == "sched/daily/usage")
    # the org's parameter over the YAML's, the YAML's {yesterday} read in the org's zone and slot
    assert usage.parameters == {"start_date": "2026-03-01", "end_date": "2026-02-28"}
    monthly = {r.org_slug: r.parameters for r in publisher.published if r.pipeline == "sched//monthly"}
    assert monthly == {"org_x": {"month": "2026-02"}, "org_y": {"month": "2026-03"},
                       "org_z": {"month": "2026-03", "note": "z"}}
    from convergence.schemas import decode_run_request
    for request in publisher.published:  # copies are as valid as requests built and checked in full
        assert decode_run_request(request.to_json(), request.attributes()) == request
    assert fanout.fan_out(TICK).published == 0  # the org schedule's run_ids are deterministic too


def test_a_config_that_makes_no_valid_request_skips_that_run_only(tmp_path):
    rows = [row("config", "org_x", "sched//monthly", parameters={"month": "{no_such_name}"}),
            row("config", "org_y", "sched//monthly", parameters={"note": "fine"}),
            # the copy path: too long once {slot} is resolved
            row("config", "org_z", "sched//monthly", parameters={"note": "z" * 1015 + "{slot}"}),
            row("schedule", "org_x", "sched/hourly/anthropic", cron="every day")]  # unreadable: no YAML default
    publisher = FakePublisher()
    fanout = TickFanOut(PipelineLoader(write_configs(tmp_path)), publisher, lambda i: ELIGIBLE[i], FakeLedger(),
                        org_configs=lambda _pipelines, _orgs: pc.from_rows(rows))
    report = fanout.fan_out(TICK)
    monthly = {r.org_slug: r.parameters for r in publisher.published if r.pipeline == "sched//monthly"}
    assert report.invalid == 3 and monthly == {"org_y": {"month": "2026-03", "note": "fine"}}
    assert "sched/hourly/anthropic" not in {r.pipeline for r in publisher.published}


# ---- on the emulators ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    root = tmp_path_factory.mktemp("orgcfg")
    platform = Platform(local_stack, root)
    write_configs(root, platform.settings.configs_dir)
    credentials = platform.services.credentials
    for org, status, providers in (("org_x_cfg", "ACTIVE", ["OPENAI", "ANTHROPIC"]),
                                   ("org_y_cfg", "TRIAL", ["OPENAI"]), ("org_z_cfg", "ACTIVE", []),
                                   ("org_s_cfg", "SUSPENDED", [])):
        platform.onboard(org, status=status)
        for provider in providers:
            credentials.put(org, provider, f"secret-{org}-{provider}", validation_status="VALID")
    yield platform
    platform.close()


@pytest.fixture
def cli(platform, monkeypatch):
    from convergence.commands.orgs import orgs

    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)

    def invoke(*args: str):
        return CliRunner().invoke(orgs, ["pipelines", *args])

    return invoke


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.emulator
def test_cli_round_trip_then_the_tick_and_the_gate_read_it(platform, cli, pull_messages):
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.tenancy.eligibility import EligibleOrgs

    ok(cli("disable", "org_x_cfg", "sched/daily/usage"))
    shown = json.loads(ok(cli("set", "org_y_cfg", "sched/daily/usage", "--param", "start_date={month_start}",
                              "--schedule", "05:40", "--timezone", "Europe/Paris", "--format", "json")))
    assert shown["pipelines"] == [{
        "pipeline": "sched/daily/usage", "enabled": True, "known": True,
        "schedule": {"source": "org", "cron": "40 5 * * *", "timezone": "Europe/Paris"},
        "parameters": {"start_date": "{month_start}"},
        "default_parameters": {"start_date": "{yesterday}", "end_date": "{yesterday}"}}]
    ok(cli("set", "org_z_cfg", "sched/daily/later", "--schedule", "*/30 * * * *"))
    ok(cli("set", "org_s_cfg", "sched/daily/later", "--schedule", "*/30 * * * *"))  # suspended: never runs
    listed = json.loads(ok(cli("list", "org_x_cfg", "--json")))["pipelines"]
    by_name = {p["pipeline"]: p for p in listed}
    assert by_name["sched/daily/usage"]["enabled"] is False and by_name["sched//monthly"]["enabled"] is True
    table = ok(cli("list", "org_y_cfg"))
    assert "40 5 * * * Europe/Paris (org)" in table and "daily 10:00 UTC" in table  # later: the YAML's

    s = platform.settings
    reader = pc.OrgConfigReader(platform.services.bigquery, s)
    fanout = TickFanOut(PipelineLoader(s.configs_dir), platform.services.requests,
                        EligibleOrgs(platform.services.bigquery, s), ExecutionLedger(platform.services.bigquery, s),
                        org_configs=reader)
    report = fanout.fan_out(TICK)
    messages = pull_messages(s, s.requests_subscription, len(EXPECTED) + 1, timeout=4)
    bodies = [json.loads(m.message.data) for m in messages]
    got = sorted((b["org_slug"].removesuffix("_cfg"), b["pipeline"], b["run_id"]) for b in bodies)
    assert got == sorted((org, pipeline, scheduled_run_id(f"{org}_cfg", pipeline, slot)) for org, pipeline, slot in [
        ("org_x", "sched//monthly", at(4, 45)), ("org_x", "sched/hourly/anthropic", at(4, 15)),
        ("org_y", "sched/daily/usage", PARIS_0540), ("org_y", "sched//monthly", at(4, 45)),
        ("org_z", "sched//monthly", at(4, 45)), ("org_z", "sched/daily/later", at(4, 30)),
        ("org_z", "sched/daily/later", at(5, 0))])
    assert reader.calls == 1 and report.org_configs == 3  # the suspended org's row is not even read
    usage = next(b for b in bodies if b["pipeline"] == "sched/daily/usage")
    assert usage["parameters"] == {"start_date": "2026-03-01", "end_date": "2026-02-28"}

    # The consumer's admission refuses the disabled pipeline (a run requested through the API), allows the
    # others, from one standings query.
    from convergence.consumer.admission import AdmissionControl
    from convergence.runtime import Services

    def admit(*requests):
        control = AdmissionControl(Services(s), cache_seconds=30.0, batch_delay=0.01)

        async def main():
            return await asyncio.gather(*(control.admit(f"run_{uuid.uuid4().hex[:10]}", org, pipeline)
                                          for org, pipeline in requests))

        return [a.decision.code for a in asyncio.run(main())], control.calls["standings"]

    requests = [("org_x_cfg", "sched/daily/usage"), ("org_x_cfg", "sched//monthly"),
                ("org_y_cfg", "sched/daily/usage")]
    assert admit(*requests) == (["PIPELINE_DISABLED", "ALLOWED", "ALLOWED"], 1)

    ok(cli("enable", "org_x_cfg", "sched/daily/usage"))
    assert admit(*requests) == (["ALLOWED", "ALLOWED", "ALLOWED"], 1)
    ok(cli("set", "org_y_cfg", "sched/daily/usage", "--schedule", "default"))
    listed = json.loads(ok(cli("list", "org_y_cfg", "--json")))["pipelines"]
    usage_row = next(p for p in listed if p["pipeline"] == "sched/daily/usage")
    assert usage_row["schedule"]["source"] == "yaml" and usage_row["parameters"] == {"start_date": "{month_start}"}


@pytest.mark.emulator
@pytest.mark.parametrize(("args", "message"), [
    (["set", "org_x_cfg", "sched//monthly", "--schedule", "99 * * * *"], "invalid cron expression"),
    (["set", "org_x_cfg", "sched//monthly", "--timezone", "Mars/Olympus"], "unknown time zone"),
    (["set", "org_x_cfg", "sched//monthly", "--param", "org_slug=org_y_cfg"], "is not allowed"),
    (["set", "org_x_cfg", "sched//monthly", "--param", "month={nope}"], "unknown placeholder"),
    (["set", "org_x_cfg", "sched//monthly", "--param", "novalue"], "give NAME=VALUE"),
    (["set", "org_x_cfg", "sched//monthly"], "nothing to set"),
    (["enable", "org_x_cfg", "no/such/pipeline"], "unknown pipeline"),
    (["disable", "Bad Org!", "sched//monthly"], "ORG"),
    (["list", "org_never_onboarded"], "is not onboarded"),
])
def test_bad_input_is_a_clear_error(cli, args, message):
    result = cli(*args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a usage error, not a crash


def test_the_orgs_billing_export_reaches_its_gcp_billing_run():
    """The repo's own gcp/cost/billing (daily 06:00 UTC, integration GCP_SA): the org's export project and
    table ride in its run request; another org gets the YAML's defaults (no parameters)."""
    from tests.unit.publisher.test_fanout import REPO

    rows = [row("config", "org_acme", "gcp/cost/billing", parameters={
        "billing_export_project": "acme-billing", "billing_export_table": "gcp_billing_export_v1_0A1B2C"})]
    publisher = FakePublisher()
    eligible = {"GCP_SA": ["org_acme", "org_other"], None: ["org_acme", "org_other"]}
    fanout = TickFanOut(PipelineLoader(REPO / "configs"), publisher, lambda i: eligible.get(i, []), FakeLedger(),
                        org_configs=lambda _pipelines, _orgs: pc.from_rows(rows))
    fanout.fan_out(at(6, 0))
    billing = {r.org_slug: r.parameters for r in publisher.published if r.pipeline == "gcp/cost/billing"}
    assert billing == {"org_acme": {"billing_export_project": "acme-billing",
                                    "billing_export_table": "gcp_billing_export_v1_0A1B2C"}, "org_other": {}}
