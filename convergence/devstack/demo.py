"""`make run` / `convergence dev demo`: the whole service on the embedded local stack.

Starts the emulators and the provider stand-ins, bootstraps the warehouse, applies the Pub/Sub
topology, onboards a demo org (and a suspended one), starts the consumer, publishes demo run requests
(the diamond example, the LLM usage-and-cost pipelines, and requests that must be rejected), waits for
every run to end and prints the run log and the results."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

DEMO_ORG = "acme_demo"
SUSPENDED_ORG = "paused_demo"
STALE_ORG = "stale_demo"  # its OpenAI key was found INVALID: the scheduler leaves it out of OpenAI pipelines
OWN_SCHEDULE_PIPELINE = "openai/cost/usage_cost"  # the demo org runs it at its own time
FINAL = {"SUCCESS", "FAILED", "TIMEOUT", "REJECTED"}


def _yesterday() -> str:
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


FOCUS_PIPELINES = ("focus/cost/openai", "focus/cost/anthropic")
_FOCUS_SUMMARY = """SELECT ServiceProviderName, ServiceCategory, x_CostBasis, COUNT(*) AS row_count,
  SUM(BilledCost) AS billed, SUM(EffectiveCost) AS effective
FROM {table} WHERE x_OrgSlug = @org AND x_ChargeDate BETWEEN @start AND @end
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""


def focus_summary(client: Any, settings: Any, dates: dict[str, str]) -> list[dict[str, Any]]:
    """Cost by ServiceProviderName and ServiceCategory from the demo org's FOCUS table."""
    from datetime import date

    from google.cloud import bigquery

    from convergence.warehouse.identifiers import table_ref

    table = table_ref(settings.gcp_project_id, settings.org_dataset(DEMO_ORG), "focus_cost_daily")
    job = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("org", "STRING", DEMO_ORG),
        bigquery.ScalarQueryParameter("start", "DATE", date.fromisoformat(dates["start_date"])),
        bigquery.ScalarQueryParameter("end", "DATE", date.fromisoformat(dates["end_date"])),
    ])
    return [dict(row.items()) for row in client.query(_FOCUS_SUMMARY.format(table=table), job_config=job).result()]


def format_focus(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'ServiceProviderName':<20} {'ServiceCategory':<26} {'basis':<10} {'rows':>6} "
             f"{'BilledCost':>12} {'EffectiveCost':>14}"]
    for r in rows:
        lines.append(f"{r['ServiceProviderName']:<20} {r['ServiceCategory']:<26} {r['x_CostBasis'] or '-':<10} "
                     f"{r['row_count']:>6} {float(r['billed'] or 0):>12.2f} {float(r['effective'] or 0):>14.2f}")
    return "\n".join(lines)


def wait_for_runs(runlog: Any, run_ids: list[str], timeout: float, on_final: Callable[[Any], None]) -> dict:
    """Poll the run log until every run has a final status (or the timeout)."""
    final: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(final) < len(run_ids) and time.monotonic() < deadline:
        for run_id in run_ids:
            if run_id in final:
                continue
            record = runlog.latest_run(run_id)
            if record is not None and record.status in FINAL:
                final[run_id] = record
                on_final(record)
        time.sleep(0.5)
    return final


def show_scheduling(echo: Callable[[str], None], services: PlatformServices, settings: Any,
                    keys: dict[str, str]) -> None:
    """Tenants for real: the demo org moves one pipeline to its own time, and a third org whose OpenAI key
    was found INVALID is left out of the OpenAI pipelines by the scheduler (its Anthropic ones still run)."""
    from convergence.tenancy import pipeline_configs
    from convergence.tenancy.central import Central
    from convergence.tenancy.eligibility import EligibleOrgs
    from convergence.tenancy.onboarding import onboard_org

    onboard_org(services.bigquery, settings, services.cipher, STALE_ORG, "STARTER")
    services.credentials.put(STALE_ORG, "OPENAI", "sk-admin-revoked-demo-key", validation_status="INVALID")
    services.credentials.put(STALE_ORG, "ANTHROPIC", keys["ANTHROPIC"], validation_status="VALID")
    central = Central(services.bigquery, settings)
    pipeline_configs.write_schedule(central, DEMO_ORG, OWN_SCHEDULE_PIPELINE, cron="40 5 * * *",
                                    timezone="Europe/Paris", active=True)
    own = pipeline_configs.read(central, [OWN_SCHEDULE_PIPELINE], org=DEMO_ORG).get(DEMO_ORG,
                                                                                   OWN_SCHEDULE_PIPELINE)
    echo(f"== Org {STALE_ORG} onboarded; its OPENAI credential is INVALID (a revoked key)")
    echo(f"== Scheduling: {DEMO_ORG} runs {OWN_SCHEDULE_PIPELINE} on its own schedule "
         f"{own.cron if own else '?'} {own.timezone if own else ''} (the YAML says daily 04:00 UTC)")
    eligible = EligibleOrgs(services.bigquery, settings)
    for integration in ("OPENAI", "ANTHROPIC"):
        orgs = eligible(integration)
        left_out = [org for org in (DEMO_ORG, STALE_ORG) if org not in orgs]
        echo(f"   {integration} pipelines are scheduled for: {', '.join(orgs) or 'nobody'}"
             + (f"; skipped: {', '.join(left_out)} (credential not valid)" if left_out else ""))


def start_console(settings: Any) -> tuple[str, Callable[[], None]]:
    """`convergence serve`'s app (push, run door, console) on a free loopback port, in a thread."""
    from convergence.api import ApiDoor
    from convergence.console import Console
    from convergence.consumer.http_app import run_server
    from convergence.consumer.serving import build_push_app
    from convergence.devstack.ports import LOOPBACK, free_port
    from convergence.runtime import Services

    services = Services(settings)
    app = build_push_app(settings, services)
    ApiDoor(settings, services).register(app)
    Console(settings, services).register(app)
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        loop.call_soon(started.set)
        await run_server(app, LOOPBACK, port, stop=stop, handle_signals=False)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True, name="console")
    thread.start()
    started.wait(10)
    url = f"http://{LOOPBACK}:{port}/console"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the page answers before the demo says where it is
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{url}/login", timeout=2):
                break
        except urllib.error.HTTPError:  # an HTTP answer: the server is up
            break
        except OSError:
            time.sleep(0.1)

    def close() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        services.close()

    return url, close


def run_demo(echo: Callable[[str], None], keep_running: bool = False, verbose: bool = False) -> int:
    from convergence.devstack.background import BackgroundConsumer
    from convergence.devstack.providers.demo import (
        DEMO_PIPELINES,
        LlmStandIns,
        cost_summary,
        demo_parameters,
        format_summary,
    )
    from convergence.devstack.stack import LocalStack
    from convergence.infra.apply import apply
    from convergence.infra.topology import Topology
    from convergence.observability.logging import configure_logging
    from convergence.runtime import Services
    from convergence.settings import reset_settings
    from convergence.settings.model import load_settings
    from convergence.warehouse.bootstrap import bootstrap

    # The demo prints its own summary; service logs only when asked (or when something goes wrong).
    configure_logging("INFO" if verbose else "ERROR", "console")
    echo("== Starting the local stack (Pub/Sub emulator, BigQuery emulator, provider stand-ins)")
    stack = LocalStack().start()
    standins = LlmStandIns()
    openai_url = standins.openai.start_in_thread()
    anthropic_url = standins.anthropic.start_in_thread()
    consumer = None
    stop_console: Callable[[], None] | None = None
    try:
        stack.apply_env()
        reset_settings()
        settings = load_settings(environment="local", openai_base_url=openai_url, anthropic_base_url=anthropic_url,
                                 ca_root_api_key=f"demo-root-{secrets.token_hex(16)}", push_verify_token=False)
        for name, value in {**stack.env, "OPENAI_BASE_URL": openai_url, "ANTHROPIC_BASE_URL": anthropic_url}.items():
            echo(f"   {name}={value}")
        services = Services(settings)

        report = bootstrap(services.bigquery, settings)
        echo(f"== Bootstrap: dataset {settings.central_dataset}, {len(report.created)} table(s) created")
        topology_report = apply(Topology.from_settings(settings), settings)
        echo(f"== Pub/Sub topology: {len(topology_report.items)} resource(s) applied")

        from convergence.tenancy.onboarding import onboard_org

        onboarded = onboard_org(services.bigquery, settings, services.cipher, DEMO_ORG, "PROFESSIONAL")
        onboard_org(services.bigquery, settings, services.cipher, SUSPENDED_ORG, "STARTER",
                    subscription_status="SUSPENDED")
        for provider, key in standins.credentials.items():
            services.credentials.put(DEMO_ORG, provider, key)
        echo(f"== Org {DEMO_ORG} onboarded (PROFESSIONAL), dataset {settings.org_dataset(DEMO_ORG)}; "
             f"API key {onboarded.api_key[:len(DEMO_ORG) + 9]}... (shown once); credentials: "
             f"{', '.join(standins.credentials)} (KMS-encrypted)")
        echo(f"== Org {SUSPENDED_ORG} onboarded with subscription SUSPENDED")
        show_scheduling(echo, services, settings, standins.credentials)

        console_url, stop_console = start_console(settings)
        echo(f"== Console: {console_url} (sign in with the root key {settings.ca_root_api_key.get_secret_value()}"
             " or the org's API key; --keep-running leaves it up)")
        consumer = BackgroundConsumer(settings, Services(settings), notify=None).start()
        echo(f"== Consumer started: {settings.consumer_workers} workers, "
             f"{settings.per_org_concurrency} concurrent runs per org")

        llm_params = demo_parameters()
        requests = [(DEMO_ORG, "demo/example/diamond", {"date": _yesterday()})]
        requests += [(DEMO_ORG, pipeline, llm_params) for pipeline in DEMO_PIPELINES]
        requests += [(SUSPENDED_ORG, "demo/example/diamond", {"date": _yesterday()}),
                     (DEMO_ORG, "demo/example/no_such_pipeline", {})]
        echo("== Publishing demo run requests to the requests topic")
        run_ids = []
        for org, pipeline, parameters in requests:
            run_id = services.requests.publish_run(org, pipeline, parameters, requested_by="make-run")
            run_ids.append(run_id)
            echo(f"   {run_id}  {org:<12} {pipeline}")

        echo("== Waiting for the runs (status from the run log)")

        def show(record: Any) -> None:
            line = f"   {record.status:<8} {record.org_slug:<12} {record.pipeline or '-':<28}"
            if record.status == "REJECTED" or record.error_code:
                line += f" {record.error_code}: {(record.error_message or '')[:70]}"
            else:
                line += f" {record.rows_processed or 0} rows in {record.duration_ms} ms"
            echo(line)
            if record.status != "REJECTED":
                for step in services.runlog.step_logs(record.run_id, record.org_slug):
                    echo(f"        {step.step_id:<22} {step.status:<8} rows={step.rows_processed:<6} "
                         f"{step.duration_ms} ms")

        final = wait_for_runs(services.runlog, run_ids, timeout=180, on_final=show)
        missing = [run_id for run_id in run_ids if run_id not in final]

        echo(f"== LLM cost (USD) for {llm_params['start_date']}..{llm_params['end_date']}")
        rows = asyncio.run(cost_summary(services.bigquery, settings.org_dataset(DEMO_ORG), DEMO_ORG,
                                        llm_params["start_date"], llm_params["end_date"]))
        echo(format_summary(rows))

        echo("== FOCUS: mapping the providers' costs into focus_cost_daily")
        focus_ids = [services.requests.publish_run(DEMO_ORG, pipeline, llm_params, requested_by="make-run")
                     for pipeline in FOCUS_PIPELINES]
        focus_final = wait_for_runs(services.runlog, focus_ids, timeout=120, on_final=show)
        missing += [run_id for run_id in focus_ids if run_id not in focus_final]
        echo(format_focus(focus_summary(services.bigquery, settings, llm_params)))
        ok = not missing and final[run_ids[0]].status == "SUCCESS"
        finished, total = len(final) + len(focus_final), len(run_ids) + len(focus_ids)
        echo(f"== Done: {finished} of {total} runs finished" + (f"; still running: {missing}" if missing else ""))
        if keep_running:
            echo("== The stack keeps running; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        services.close()
        return 0 if ok else 1
    finally:
        if stop_console is not None:
            stop_console()
        if consumer is not None:
            consumer.stop()
        standins.openai.stop_thread()
        standins.anthropic.stop_thread()
        stack.stop()
