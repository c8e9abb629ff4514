"""deploy/terraform: the same topology and defaults as the service's settings; formatted; validated where
the Google provider can be installed (not on this project's machines: the tests say so when they skip)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from convergence.settings.model import Settings
from tests.paths import REPO_ROOT

TERRAFORM = REPO_ROOT / "deploy" / "terraform"
# Terraform variable -> setting with the same meaning (and the same default).
SAME_AS_SETTINGS = [
    "requests_topic", "requests_subscription", "events_topic", "ticks_topic", "ticks_subscription",
    "dead_letter_topic", "dead_letter_subscription", "ticks_dead_letter_topic", "ticks_dead_letter_subscription",
    "push_subscription", "handoff_topic", "max_delivery_attempts", "retry_min_backoff_seconds",
    "retry_max_backoff_seconds", "ack_deadline_seconds", "push_ack_deadline_seconds", "tick_window_minutes",
    "central_dataset", "bigquery_location", "consumer_workers",
]


def variable_defaults() -> dict[str, str]:
    text = (TERRAFORM / "variables.tf").read_text()
    defaults = {}
    for name, body in re.findall(r'variable "(\w+)" \{(.*?)\n\}', text, flags=re.DOTALL):
        match = re.search(r"^\s*default\s*=\s*(.+)$", body, flags=re.MULTILINE)
        if match:
            defaults[name] = match.group(1).strip().strip('"')
    return defaults


def test_terraform_defaults_are_the_settings_defaults():
    defaults = variable_defaults()
    for name in SAME_AS_SETTINGS:
        assert name in defaults, f"variables.tf has no default for {name}"
        assert defaults[name] == str(Settings.model_fields[name].default), name


def test_every_setting_terraform_passes_exists():
    """Environment variables set on the Cloud Run services are settings the service reads."""
    text = (TERRAFORM / "run.tf").read_text()
    names = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)\s*=", text, flags=re.MULTILINE)) | {"CA_ROOT_API_KEY"}
    known = {field.upper() for field in Settings.model_fields}
    assert names - known == set(), names - known


def test_the_design_s_iam_is_there():
    iam = (TERRAFORM / "iam.tf").read_text()
    pubsub = (TERRAFORM / "pubsub.tf").read_text()
    assert "gcp-sa-pubsub" in (TERRAFORM / "versions.tf").read_text()
    # the service agent may publish to both dead-letter topics and ack on the source subscriptions
    assert re.search(r'agent_publishes_dead_letters".*?roles/pubsub.publisher.*?pubsub_service_agent', iam, re.DOTALL)
    assert re.search(r'agent_acks_sources".*?roles/pubsub.subscriber.*?pubsub_service_agent', iam, re.DOTALL)
    # push uses an OIDC identity allowed to invoke serve
    assert "oidc_token" in pubsub and "google_service_account.push.email" in pubsub
    assert re.search(r'push_invokes_serve".*?roles/run.invoker', iam, re.DOTALL)
    # every consuming subscription retries with backoff; the request ones dead-letter
    assert pubsub.count("retry_policy {") == 6 and pubsub.count("dead_letter_policy {") == 4
    assert 'pubsub_target {' in (TERRAFORM / "scheduler.tf").read_text()


def terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed on this machine")
    return binary


def test_terraform_fmt():
    result = subprocess.run([terraform(), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.slow
def test_terraform_validate(tmp_path):
    binary = terraform()
    work = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, work)
    init = subprocess.run([binary, "init", "-backend=false", "-input=false", "-no-color"], cwd=work,
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        why = next((line.strip() for line in init.stderr.splitlines() if "registry" in line or "lookup" in line),
                   init.stderr.strip()[-200:])
        pytest.skip(f"terraform validate not run: the hashicorp/google provider cannot be installed here ({why})")
    result = subprocess.run([binary, "validate", "-no-color"], cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
