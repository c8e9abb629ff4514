"""Start-up failures through the real CLI (`python -m convergence ...` as a child process): every settings,
credentials or connectivity problem ends in a short list on stderr and exit code 2, never a traceback,
and never quotes a secret setting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import REPO

ROOT_KEY = "root-key-" + "s3cr3t" * 6  # long enough for production
SECRETS = {"SMTP_PASSWORD": "smtp-pass-9f8e7d6c", "SLACK_WEBHOOK_URL": "https://hooks.example.com/T000/B000/xyzzy123"}
GOOD_PRODUCTION = {
    "ENVIRONMENT": "production", "CA_ROOT_API_KEY": ROOT_KEY, "GCP_PROJECT_ID": "convergence-startup",
    "KMS_KEY_NAME": "projects/p/locations/us/keyRings/r/cryptoKeys/k", **SECRETS,
}
# Upper bound for a child that must give up on its own; start-up retries an endpoint for 10 s.
CHILD_TIMEOUT = 90


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: no emulator, credentials or settings from the test session leak in; HOME is
    # empty, so no gcloud user credentials are found either.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "convergence", *args], cwd=REPO, env={**base, **env},  # noqa: S603
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)


def assert_cannot_start(result: subprocess.CompletedProcess[str], *expected: str) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert "convergence: cannot start:" in result.stderr
    problems = [line[4:] for line in result.stderr.splitlines() if line.startswith("  - ")]
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)
    for secret in (ROOT_KEY, "short-root-key", *SECRETS.values()):
        assert secret not in output
    return problems


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing listens there


@pytest.mark.parametrize("command", ["consume", "serve"])
def test_production_with_missing_settings_lists_every_problem(tmp_path, command):
    result = run_cli(tmp_path, command, ENVIRONMENT="production", CA_ROOT_API_KEY="short-root-key",
                     DISABLE_AUTH="true", **SECRETS)
    problems = assert_cannot_start(result, "CA_ROOT_API_KEY must be at least 32 characters",
                                   "DISABLE_AUTH must be false", "KMS_KEY_NAME is required")
    assert len(problems) == 3


def test_invalid_settings_end_any_command_with_exit_2(tmp_path):
    result = run_cli(tmp_path, "runs", "list", "--org", "acme_corp", MAX_DELIVERY_ATTEMPTS="1",
                     GCP_PROJECT_ID="Not A Project", **SECRETS)
    assert_cannot_start(result, "MAX_DELIVERY_ATTEMPTS", "GCP_PROJECT_ID")


def test_a_list_setting_that_is_not_json(tmp_path):
    result = run_cli(tmp_path, "dlq", "list", OUTBOUND_ALLOWED_HOSTS="[10.0.0.0/8", **SECRETS)
    assert_cannot_start(result, "OUTBOUND_ALLOWED_HOSTS: not valid JSON")


def test_production_without_google_credentials(tmp_path):
    result = run_cli(tmp_path, "consume", GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"),
                     **GOOD_PRODUCTION)
    problems = assert_cannot_start(result, "Google credentials", "missing.json was not found")
    assert len(problems) == 1  # Pub/Sub and BigQuery both found no credentials: said once


def test_production_with_an_invalid_credentials_file(tmp_path):
    key_file = tmp_path / "key.json"
    private = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key"
    key_file.write_text(json.dumps({
        "type": "service_account", "client_email": "svc@p.iam.gserviceaccount.com", "project_id": "p",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{private}\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    result = run_cli(tmp_path, "serve", GOOGLE_APPLICATION_CREDENTIALS=str(key_file), PUSH_VERIFY_TOKEN="true",
                     PUSH_AUDIENCE="https://example.com", PUSH_SERVICE_ACCOUNT_EMAIL="push@p.iam.gserviceaccount.com",
                     **GOOD_PRODUCTION)
    assert_cannot_start(result, "Google credentials", "Failed to load service account credentials")
    assert private not in result.stderr


@pytest.mark.parametrize("command", ["consume", "serve"])
def test_unreachable_emulators_end_within_a_bounded_time(tmp_path, command):
    host = f"127.0.0.1:{closed_port()}"
    # subprocess.run's timeout is the bound: without the start-up check the streaming pull retries forever.
    result = run_cli(tmp_path, command, PUBSUB_EMULATOR_HOST=host, BIGQUERY_EMULATOR_HOST=host,
                     PUSH_VERIFY_TOKEN="false", **SECRETS)
    assert_cannot_start(result, f"Pub/Sub unreachable at {host}", f"BigQuery unreachable at http://{host}")


# A one-shot command gives up on an unreachable BigQuery in seconds; the client's own retries take minutes.
ONE_SHOT_BOUND_SECONDS = 30


@pytest.mark.parametrize("command", [("runs", "list"), ("costs", "acme_corp"), ("bootstrap",)])
def test_one_shot_commands_on_an_unreachable_bigquery_end_in_seconds(tmp_path, command):
    host = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = run_cli(tmp_path, *command, BIGQUERY_EMULATOR_HOST=host, **SECRETS)
    elapsed = time.monotonic() - started
    problems = assert_cannot_start(result, f"BigQuery unreachable at http://{host}")
    assert len(problems) == 1
    assert elapsed < ONE_SHOT_BOUND_SECONDS, elapsed


@pytest.mark.emulator
def test_one_shot_check_lets_bootstrap_create_the_missing_central_dataset(tmp_path, local_stack):
    # The check passes on any answer: the dataset it asks for not existing yet is the command's business.
    result = run_cli(tmp_path, "bootstrap", BIGQUERY_EMULATOR_HOST=local_stack.bigquery.host,
                     GCP_PROJECT_ID=local_stack.project, CENTRAL_DATASET="startup_bootstrapped_dataset")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cannot start" not in result.stderr


@pytest.mark.emulator
def test_reachable_emulators_without_topology_say_what_to_create(tmp_path, local_stack):
    result = run_cli(tmp_path, "consume", PUBSUB_EMULATOR_HOST=local_stack.pubsub.host,
                     BIGQUERY_EMULATOR_HOST=local_stack.bigquery.host, GCP_PROJECT_ID=local_stack.project,
                     REQUESTS_SUBSCRIPTION="startup-absent-sub", EVENTS_TOPIC="startup-absent-topic",
                     OVERFLOW_SUBSCRIPTION="startup-absent-overflow", CENTRAL_DATASET="startup_absent_dataset")
    assert_cannot_start(
        result,
        f"Pub/Sub subscription projects/{local_stack.project}/subscriptions/startup-absent-sub does not exist "
        "(`convergence infra apply` creates it)",
        f"Pub/Sub subscription projects/{local_stack.project}/subscriptions/startup-absent-overflow does not exist",
        f"Pub/Sub topic projects/{local_stack.project}/topics/startup-absent-topic does not exist",
        "startup_absent_dataset does not exist (`convergence bootstrap` creates it)")


@pytest.mark.emulator
def test_a_one_shot_command_on_a_missing_central_dataset_says_to_bootstrap(tmp_path, local_stack):
    result = run_cli(tmp_path, "runs", "list", BIGQUERY_EMULATOR_HOST=local_stack.bigquery.host,
                     GCP_PROJECT_ID=local_stack.project, CENTRAL_DATASET="startup_never_bootstrapped")
    [problem] = assert_cannot_start(result, "not found:", "`convergence bootstrap` creates the central dataset")
    assert "startup_never_bootstrapped" in problem
