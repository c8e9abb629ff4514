"""deploy/terraform, read as HCL (python-hcl2): the monitoring (Prometheus sidecar on both roles, the alert
policies and their metric filters resolved to the real subscription names, the dashboard), the worker pool and
its backlog autoscaler, and who may publish run requests. Values are checked against the service itself: the
settings' names, the consumer's lease and flow control, and the metrics a finished run really exports.
`terraform fmt -check` runs where a terraform binary is installed; `terraform validate` needs the provider
download (tests/unit/deploy/test_docker_deploy.py)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from convergence.consumer.flow import FlowPlan
from convergence.consumer.service import longest_timeout_seconds
from convergence.observability.metrics import MetricsObserver, exposition
from convergence.pipeline.loader import PipelineLoader
from convergence.pipeline.results import PipelineResult, RunStatus
from convergence.settings.model import Settings
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
TERRAFORM = ROOT / "deploy" / "terraform"
SIDECAR_IMAGE = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar"


# -- reading the configuration ------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on strings and labels, and marks blocks; drop both."""
    if isinstance(value, dict):
        return {_unquote(key): _clean(item) for key, item in value.items()
                if key not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return _unquote(value)


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


class Config:
    def __init__(self, directory: Path):
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.moved: dict[str, str] = {}
        self.text = ""
        for path in sorted(directory.glob("*.tf")):
            self.text += path.read_text()
            with path.open() as handle:
                parsed = _clean(hcl2.load(handle))
            for block in parsed.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        assert name not in self.resources.get(kind, {}), f"{kind}.{name} defined twice"
                        self.resources.setdefault(kind, {})[name] = body
            for block in parsed.get("locals", []):
                self.locals.update(block)
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("moved", []):
                self.moved[block["from"]] = block["to"]

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(kind, {}), f"no {kind}.{name}"
        return self.resources[kind][name]

    def instances(self, kind: str, name: str) -> dict[str, dict[str, Any]]:
        """A resource with `for_each = local.<map>`, one body a key as terraform expands it: `each.value.<field>`
        and dynamic blocks rendered from the map's entry."""
        body = self.resource(kind, name)
        source = re.fullmatch(r"\$\{local\.(\w+)\}", body["for_each"])
        assert source, f"{kind}.{name}: for_each is not a local: {body['for_each']}"
        return {key: _render(body, {"each": entry}) for key, entry in self.locals[source.group(1)].items()}

    def default(self, variable: str) -> Any:
        """A variable's default; a required one (no default) stands for itself."""
        return self.variables[variable].get("default", f"<var.{variable}>")

    def resolve(self, value: Any) -> Any:
        """Evaluate the few expression forms the monitoring uses: references to locals, variable defaults and
        resource names/ids, string templates, and format()."""
        if not isinstance(value, str):
            return value
        whole = re.fullmatch(r"\$\{(.*)\}", value, flags=re.DOTALL)
        if whole and _balanced(whole.group(1)):
            return self._expression(whole.group(1).strip())
        return re.sub(r"\$\{([^{}]*)\}", lambda match: str(self._expression(match.group(1).strip())), value)

    def _expression(self, expression: str) -> Any:
        if call := re.fullmatch(r"format\((.*)\)", expression, flags=re.DOTALL):
            template, *args = [self._expression(arg.strip()) for arg in _split_args(call.group(1))]
            return template % tuple(args)
        if expression.startswith('"'):
            return self.resolve(json.loads(expression))
        if ref := re.fullmatch(r"local\.(\w+)", expression):
            return self.resolve(self.locals[ref.group(1)])
        if ref := re.fullmatch(r"var\.(\w+)", expression):
            return self.default(ref.group(1))
        if ref := re.fullmatch(r"google_pubsub_subscription\.(\w+)\.(name|id)", expression):
            name = self.resolve(self.resource("google_pubsub_subscription", ref.group(1))["name"])
            return name if ref.group(2) == "name" else f"projects/PROJECT/subscriptions/{name}"
        if ref := re.fullmatch(r"google_service_account\.(\w+)\.email", expression):
            account = self.resolve(self.resource("google_service_account", ref.group(1))["account_id"])
            return f"{account}@PROJECT.iam.gserviceaccount.com"
        raise AssertionError(f"expression not understood by this test: {expression}")


def _render(value: Any, scope: dict[str, Any]) -> Any:
    """Substitute `<iterator>.value.<field>` (and `lookup(<iterator>.value, "<field>", [])`) from scope, and expand
    `dynamic "<block>"` into the blocks it writes, left out when it writes none, as a static config reads."""
    if isinstance(value, list):
        return [_render(item, scope) for item in value]
    if isinstance(value, dict):
        body = {key: _render(item, scope) for key, item in value.items() if key not in ("dynamic", "for_each")}
        for block in value.get("dynamic", []):
            [(label, dynamic)] = block.items()
            blocks = [_render(dynamic["content"][0], scope | {label: item})
                      for item in _render(dynamic["for_each"], scope)]
            if blocks:
                body[label] = blocks
        return body
    if isinstance(value, str):
        if ref := re.fullmatch(r"\$\{(\w+)\.value\.(\w+)\}", value):
            return scope[ref.group(1)][ref.group(2)]
        if ref := re.fullmatch(r'\$\{lookup\((\w+)\.value, "(\w+)", \[\]\)\}', value):
            return scope[ref.group(1)].get(ref.group(2), [])
        iterators = "|".join(["each", *scope])
        assert not re.search(rf"\b({iterators})\.value\b", value), f"not rendered: {value}"
    return value


def _balanced(expression: str) -> bool:
    depth = 0
    for char in expression:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _split_args(text: str) -> list[str]:
    args, depth, quoted, current = [], 0, False, ""
    for index, char in enumerate(text):
        if char == '"' and (index == 0 or text[index - 1] != "\\"):
            quoted = not quoted
        if not quoted:
            depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
            if char == "," and depth == 0:
                args.append(current)
                current = ""
                continue
        current += char
    return [*args, current]


@pytest.fixture(scope="module")
def tf() -> Config:
    return Config(TERRAFORM)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def subscription_filter(subscription: str, metric: str) -> str:
    return (f'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "{subscription}" '
            f'AND metric.type = "pubsub.googleapis.com/subscription/{metric}"')


def alert_policies(tf: Config) -> dict[str, dict[str, Any]]:
    return tf.instances("google_monitoring_alert_policy", "convergence")


def conditions(tf: Config, policy: str) -> list[dict[str, Any]]:
    return alert_policies(tf)[policy]["conditions"]


# -- terraform fmt --------------------------------------------------------------------------------------------

def test_terraform_fmt():
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform fmt -check not run: no terraform binary on this machine (the HCL tests below still run)")
    result = subprocess.run([binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]


# -- the Prometheus sidecar -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "name", "role"), [
    ("google_cloud_run_v2_service", "serve", "serve"),
    ("google_cloud_run_v2_worker_pool", "worker", "consume"),
])
def test_prometheus_sidecar_runs_beside_both_roles(tf, settings, kind, name, role):
    containers = tf.resource(kind, name)["template"][0]["containers"]
    main = next(c for c in containers if c.get("args") == [role])
    sidecars = [c for c in containers if tf.resolve(c["image"]).startswith(SIDECAR_IMAGE + ":")]
    assert len(containers) == 2 and len(sidecars) == 1, containers
    sidecar = sidecars[0]
    # starts once the service answers its startup probe, and is pinned to a released tag
    assert sidecar["depends_on"] == [main["name"]]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tf.resolve(sidecar["image"]).rsplit(":", 1)[1])
    # the sidecar's default RunMonitoring config scrapes 0.0.0.0:8080/metrics: /metrics must be on 8080
    if role == "serve":
        assert main["ports"][0]["container_port"] == 8080 == settings.http_port
    else:
        env = main["dynamic"][0]["env"]["for_each"]
        assert re.search(r'METRICS_PORT\s*=\s*"8080"', env), env
        assert main["startup_probe"][0]["http_get"][0]["port"] == 8080


def test_both_identities_may_write_metrics(tf):
    roles = tf.locals["project_roles"]
    assert "roles/monitoring.metricWriter" in roles and "local.role_members" in roles


# -- alert policies -------------------------------------------------------------------------------------------

def test_both_roles_export_traces_to_cloud_trace(tf):
    assert "roles/cloudtrace.agent" in tf.locals["project_roles"]  # for both identities (role_members)
    assert tf.locals["common_env"].count("TRACING_EXPORTER") == 1 and "var.tracing_exporter" in tf.locals[
        "common_env"]
    assert tf.variables["tracing_exporter"]["default"] == "cloud_trace"
    assert settings_field_default("tracing_exporter") == "none"  # local default: off


def settings_field_default(name: str) -> Any:
    from convergence.settings.model import Settings as Model

    return Model.model_fields[name].default


def test_dead_letter_backlog_alert_watches_both_dead_letter_subscriptions(tf, settings):
    found = {tf.resolve(c["condition_threshold"][0]["filter"]): c["condition_threshold"][0]
             for c in conditions(tf, "dead_letters")}
    for subscription in (settings.dead_letter_subscription, settings.ticks_dead_letter_subscription):
        threshold = found.pop(subscription_filter(subscription, "num_undelivered_messages"))
        assert threshold["comparison"] == "COMPARISON_GT" and threshold["threshold_value"] == 0
    assert found == {}


def test_oldest_unacked_alert_fires_past_the_consumers_lease(tf, settings):
    [condition] = conditions(tf, "oldest_unacked")
    threshold = condition["condition_threshold"][0]
    assert tf.resolve(threshold["filter"]) == subscription_filter(settings.requests_subscription,
                                                                  "oldest_unacked_message_age")
    assert threshold["comparison"] == "COMPARISON_GT"
    # the lease the consumer really asks for, from the pipelines under configs/
    plan = FlowPlan.derive(workers=settings.consumer_workers, per_org=settings.per_org_concurrency,
                           longest_timeout_seconds=longest_timeout_seconds(PipelineLoader(ROOT / "configs")),
                           max_lease_extension=settings.max_lease_extension_seconds)
    assert tf.resolve(threshold["threshold_value"]) == plan.max_lease_duration


def _selectors(query: str) -> list[tuple[str, str]]:
    return re.findall(r'(convergence_\w+)\{status=~"([^"]+)"\}', query)


def test_failed_run_alert_queries_the_counter_a_failed_run_increments(tf):
    [condition] = conditions(tf, "failed_runs")
    promql = condition["condition_prometheus_query_language"][0]
    query = tf.resolve(promql["query"])
    assert promql["disable_metric_validation"] is True  # the series appear only once a run was scraped
    assert f"> {tf.default('failed_run_ratio')}" in query and f">= {tf.default('failed_run_min_count')}" in query
    selectors = _selectors(query)
    assert {name for name, _ in selectors} == {"convergence_runs_total"}
    failed = next(pattern for _, pattern in selectors if "SUCCESS" not in pattern)

    # What the service exports for finished runs, one of each final status, under a pipeline of this test.
    pipeline = "terraform/alert/probe"
    observer = MetricsObserver(pipeline)
    for status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT):
        result = PipelineResult.model_validate({
            "pipeline_id": "p", "run_id": "r", "org_slug": "acme", "status": status, "steps": [],
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:01Z", "duration_ms": 1000})
        asyncio.run(observer.pipeline_finished(result, None))
    body, _ = exposition()
    samples = [s for family in text_string_to_metric_families(body.decode()) for s in family.samples
               if s.labels.get("pipeline") == pipeline]
    exported = {s.labels["status"] for s in samples if s.name == "convergence_runs_total"}
    assert {status for status in exported if re.fullmatch(failed, status)} == {"FAILED", "TIMEOUT"}
    assert "SUCCESS" in exported and not re.fullmatch(failed, "SUCCESS")
    # the share's denominator counts every final status the service exports
    finished = next(pattern for _, pattern in selectors if "SUCCESS" in pattern)
    assert {status for status in exported if re.fullmatch(finished, status)} == exported


def test_worker_not_pulling_is_a_backlog_with_no_streaming_pull_responses(tf, settings):
    policy = alert_policies(tf)["worker_not_pulling"]
    assert policy["combiner"] == "AND"
    backlog, silent = policy["conditions"]
    assert tf.resolve(backlog["condition_threshold"][0]["filter"]) == subscription_filter(
        settings.requests_subscription, "num_undelivered_messages")
    assert backlog["condition_threshold"][0]["threshold_value"] == 0
    # `consume` pulls by streaming pull only: unary pull_request_count would never move
    assert tf.resolve(silent["condition_absent"][0]["filter"]) == subscription_filter(
        settings.requests_subscription, "streaming_pull_response_count")
    assert "subscription.pull(" not in (ROOT / "consumer" / "pool.py").read_text()
    assert ".subscribe(" in (ROOT / "consumer" / "pool.py").read_text()


def test_every_alert_policy_notifies_the_configured_channels(tf):
    assert set(tf.resources["google_monitoring_alert_policy"]) == {"convergence"}
    policies = alert_policies(tf)
    assert set(policies) == {"dead_letters", "oldest_unacked", "failed_runs", "worker_not_pulling"}
    for policy in policies.values():
        assert policy["notification_channels"] == "${var.alert_notification_channels}"
        assert policy["display_name"].startswith("Convergence: ") and policy["severity"] in ("WARNING", "ERROR",
                                                                                               "CRITICAL")
        assert policy["documentation"][0]["content"] and all(c["display_name"] for c in policy["conditions"])


def test_alert_policies_keep_their_state_under_the_for_each_keys(tf):
    # each policy was a resource of its own: without a moved block, apply would replace it
    old, new = "google_monitoring_alert_policy.{}", 'google_monitoring_alert_policy.convergence["{}"]'
    assert tf.moved == {f"${{{old.format(key)}}}": f"${{{new.format(key)}}}" for key in alert_policies(tf)}


def test_every_metric_condition_is_aligned_per_minute(tf):
    for policy in alert_policies(tf).values():
        for condition in policy["conditions"]:
            kinds = [kind for kind in condition if kind.startswith("condition_")]
            assert len(kinds) == 1, condition
            for block in condition.get("condition_threshold", []) + condition.get("condition_absent", []):
                [aggregation] = block["aggregations"]
                assert aggregation["alignment_period"] == "60s" and aggregation["per_series_aligner"], block


# -- dashboard ------------------------------------------------------------------------------------------------

def test_dashboard_shows_the_alerted_signals(tf):
    dashboard = tf.resource("google_monitoring_dashboard", "convergence")
    assert "local.dashboard_tiles" in dashboard["dashboard_json"]
    tiles = tf.locals["dashboard_tiles"]
    source = json.dumps(tiles)
    assert len(tiles) >= 6 and all(tile["title"] for tile in tiles)
    for signal in ("num_undelivered_messages", "oldest_unacked_message_age", "streaming_pull_response_count",
                   "convergence_runs_total", "local.failed_run_share", "convergence_runs_waiting",
                   "convergence_dead_lettered_total", "google_pubsub_subscription.dead_letter.name",
                   "google_pubsub_subscription.ticks_dead_letter.name", "google_pubsub_subscription.worker.name"):
        assert signal in source, signal


# -- the worker pool and its autoscaler -----------------------------------------------------------------------

def test_consume_runs_as_a_worker_pool_scaled_on_the_backlog(tf, settings):
    assert "worker" not in tf.resources["google_cloud_run_v2_service"]
    pool = tf.resource("google_cloud_run_v2_worker_pool", "worker")
    assert pool["scaling"][0]["scaling_mode"] == "MANUAL"
    assert pool["lifecycle"][0]["ignore_changes"] == ["${scaling[0].manual_instance_count}"]
    assert pool["template"][0]["service_account"] == "${google_service_account.worker.email}"
    assert tf.variables["worker_min_instances"]["validation"]

    config = tf.locals["autoscaler_config"]
    [scaled] = [obj["spec"] for obj in _yamlencode_arg(config)["spec"]["scaledObjects"]]
    assert scaled["scaleTargetRef"]["name"] == "${local.worker_pool_path}"
    assert tf.locals["worker_pool_path"].endswith("/workerpools/${google_cloud_run_v2_worker_pool.worker.name}")
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "gcp-pubsub" and trigger["metadata"]["mode"] == "SubscriptionSize"
    assert tf.resolve(trigger["metadata"]["subscriptionName"]) == \
        f"projects/PROJECT/subscriptions/{settings.requests_subscription}"
    # one instance per full flow-control window of a worker
    assert tf.locals["backlog_per_instance"] == "${2 * var.consumer_workers}"
    plan = FlowPlan.derive(workers=settings.consumer_workers, per_org=settings.per_org_concurrency,
                           longest_timeout_seconds=1, max_lease_extension=settings.max_lease_extension_seconds)
    assert plan.max_messages == 2 * settings.consumer_workers

    autoscaler = tf.resource("google_cloud_run_v2_service", "autoscaler")["template"][0]
    env = {e["name"]: e["value"] for e in autoscaler["containers"][0]["env"]}
    assert env["CREMA_CONFIG"] == "${google_parameter_manager_parameter_version.autoscaler.name}"
    assert autoscaler["scaling"][0]["max_instance_count"] == 1
    grant = tf.resource("google_cloud_run_v2_worker_pool_iam_member", "autoscaler_scales_worker")
    assert grant["role"] == "roles/run.developer"
    assert grant["name"] == "${google_cloud_run_v2_worker_pool.worker.name}"


def _yamlencode_arg(expression: str) -> dict[str, Any]:
    """The object literal inside yamlencode({...}), read by python-hcl2 as HCL."""
    body = re.fullmatch(r"\$\{yamlencode\((.*)\)\}", expression, flags=re.DOTALL).group(1)
    return _clean(hcl2.loads(f"value = {body}\n"))["value"]


# -- who may publish run requests -----------------------------------------------------------------------------

def test_only_serve_and_worker_may_publish_run_requests(tf):
    requests = "${google_pubsub_topic.requests.id}"
    topic_grants = {**{f"member.{n}": r for n, r in tf.resources.get("google_pubsub_topic_iam_member", {}).items()},
                    **{f"binding.{n}": r for n, r in tf.resources.get("google_pubsub_topic_iam_binding", {}).items()}}
    assert "google_pubsub_topic_iam_policy" not in tf.resources  # authoritative policies would hide grants
    on_requests = {name: grant for name, grant in topic_grants.items() if grant["topic"] == requests}
    assert list(on_requests) == ["member.requests_publishers"]
    grant = on_requests["member.requests_publishers"]
    assert grant["role"] == "roles/pubsub.publisher" and grant["for_each"] == "${local.requests_publishers}"
    members = {role: tf.resolve(member) for role, member in tf.locals["requests_publishers"].items()}
    assert members == {"serve": "serviceAccount:convergence-serve@PROJECT.iam.gserviceaccount.com",
                       "worker": "serviceAccount:convergence-worker@PROJECT.iam.gserviceaccount.com"}
    # the role services run as those identities
    assert tf.resource("google_cloud_run_v2_service", "serve")["template"][0]["service_account"] == \
        "${google_service_account.serve.email}"
    # other topic grants never reach the requests topic by a local either
    assert "google_pubsub_topic.requests" not in json.dumps(tf.locals["other_publishers"])
    # Cloud Scheduler publishes ticks, and nothing else
    scheduler = [g for g in topic_grants.values() if "scheduler_service_agent" in json.dumps(g)]
    assert [g["topic"] for g in scheduler] == ["${google_pubsub_topic.ticks.id}"]


def test_no_project_wide_publish_right(tf):
    broad = ("roles/pubsub.publisher", "roles/pubsub.editor", "roles/pubsub.admin", "roles/editor", "roles/owner")
    # project-level grants, with the role lists their for_each reads
    granted = json.dumps([tf.resources.get(kind, {}) for kind in (
        "google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy")])
    granted += json.dumps(tf.locals["project_roles"])
    assert "roles/bigquery.dataEditor" in granted  # the lists were found
    assert not [role for role in broad if role in granted]


# -- the overflow subscription ---------------------------------------------------------------------------------

def test_overflow_subscription_keeps_the_requests_delivery_policy_and_only_the_worker_uses_it(tf, settings):
    worker, overflow = (tf.resource("google_pubsub_subscription", name) for name in ("worker", "overflow"))
    assert overflow["topic"] == "${google_pubsub_topic.overflow.id}"
    assert tf.default("overflow_topic") == settings.overflow_topic
    assert tf.default("overflow_subscription") == settings.overflow_subscription
    # handed-off runs are still run requests: same retry and dead-letter topic, never expiring
    for block in ("retry_policy", "dead_letter_policy", "expiration_policy"):
        assert overflow[block] == worker[block], block
    assert tf.locals["pulled_subscriptions"]["overflow"] == "${google_pubsub_subscription.overflow.id}"
    # publishing there is acting for any tenant, like the requests topic: the worker only
    publishers = tf.locals["other_publishers"]  # a merge(...) expression: read as text
    assert publishers.count("google_pubsub_topic.overflow.id") == 1
    grant = re.search(r"overflow-worker\s*=\s*\{([^}]*)\}", publishers).group(1)
    assert "google_pubsub_topic.overflow.id" in grant and "local.worker_member" in grant
    assert "overflow" not in json.dumps(tf.locals["requests_publishers"])
    env = tf.locals["common_env"]  # merge({...}, var.extra_env): read as text
    assert re.search(r"OVERFLOW_TOPIC\W+var\.overflow_topic\b", env)
    assert re.search(r"OVERFLOW_SUBSCRIPTION\W+var\.overflow_subscription\b", env)
