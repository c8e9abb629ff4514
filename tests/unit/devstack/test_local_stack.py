"""The embedded local stack, driven through the real Google client libraries."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core.retry import Retry
from google.cloud import bigquery, pubsub_v1

from convergence.devstack import bqemulator_launcher, pubsub_emulator
from convergence.devstack.errors import EmulatorNotInstalledError, EmulatorStartError
from convergence.devstack.process import ManagedProcess, wait_until_ready
from convergence.devstack.stack import LocalStack

# The emulator answers bad requests with HTTP 500, which the client would retry
# for up to 10 minutes by default; fail within seconds instead.
FAIL_FAST = bigquery.DEFAULT_RETRY.with_deadline(15)
CUSTOMER_PROJECT = "customer-project"

EVENTS_SCHEMA = [
    bigquery.SchemaField("event_id", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("occurred_at", "TIMESTAMP"),
    bigquery.SchemaField("amount", "INT64"),
    bigquery.SchemaField("payload", "JSON"),
]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dataset(bq_client: bigquery.Client) -> Iterator[str]:
    """A fresh dataset id ("project.dataset"), dropped with its tables afterwards."""
    dataset_id = f"{bq_client.project}.{unique('ds')}"
    bq_client.create_dataset(dataset_id)
    yield dataset_id
    bq_client.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)


def query_rows(client: bigquery.Client, sql: str, *params: bigquery.ScalarQueryParameter) -> list[dict[str, object]]:
    job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(params)), retry=FAIL_FAST)
    return [dict(row) for row in job.result(timeout=30)]


@pytest.mark.emulator
def test_bigquery_insert_rows_json_then_parameterized_query(bq_client: bigquery.Client, dataset: str) -> None:
    table = bigquery.Table(f"{dataset}.events", schema=EVENTS_SCHEMA)
    table.time_partitioning = bigquery.TimePartitioning(field="occurred_at")
    table.clustering_fields = ["event_id"]
    bq_client.create_table(table)

    errors = bq_client.insert_rows_json(
        f"{dataset}.events",
        [
            # JSON columns take a JSON string: a dict makes the emulator answer 500.
            {"event_id": "e1", "occurred_at": "2024-05-01T12:00:00Z", "amount": 7, "payload": json.dumps({"k": "v"})},
            {"event_id": "e2", "occurred_at": "2024-05-02T12:00:00Z", "amount": 9, "payload": None},
        ],
        retry=FAIL_FAST,
    )

    assert errors == []
    rows = query_rows(
        bq_client,
        f"SELECT event_id, amount, payload FROM `{dataset}.events` WHERE event_id = @event_id",
        bigquery.ScalarQueryParameter("event_id", "STRING", "e1"),
    )
    assert rows == [{"event_id": "e1", "amount": 7, "payload": {"k": "v"}}]
    fetched = bq_client.get_table(f"{dataset}.events")
    assert fetched.time_partitioning.field == "occurred_at"
    assert fetched.clustering_fields == ["event_id"]


@pytest.mark.emulator
def test_bigquery_load_table_from_file_without_size_uses_resumable_upload(
    bq_client: bigquery.Client, dataset: str
) -> None:
    # With size=N the client sends a multipart upload, which the emulator refuses;
    # without it the client uses a resumable upload, which works.
    bq_client.create_table(bigquery.Table(f"{dataset}.events", schema=EVENTS_SCHEMA))
    lines = (json.dumps({"event_id": f"e{i}", "amount": i, "payload": json.dumps({"i": i})}) for i in range(5000))
    body = io.BytesIO("\n".join(lines).encode())
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
    )

    job = bq_client.load_table_from_file(body, f"{dataset}.events", job_config=config)
    job.result(timeout=60)

    assert job.state == "DONE" and job.error_result is None
    rows = query_rows(bq_client, f"SELECT COUNT(*) AS n, SUM(amount) AS total FROM `{dataset}.events`")
    assert rows == [{"n": 5000, "total": sum(range(5000))}]


@pytest.mark.emulator
def test_bigquery_serves_a_second_project_without_creating_it(local_stack: LocalStack, dataset: str) -> None:
    customer_dataset = f"{CUSTOMER_PROJECT}.{dataset.split('.')[1]}"  # same dataset name, other project
    customer = local_stack.bigquery_client(CUSTOMER_PROJECT)
    service = local_stack.bigquery_client()
    try:
        customer.create_dataset(customer_dataset)
        customer.create_table(bigquery.Table(f"{customer_dataset}.events", schema=EVENTS_SCHEMA))
        assert customer.insert_rows_json(f"{customer_dataset}.events", [{"event_id": "c1"}], retry=FAIL_FAST) == []

        # The projects are kept apart, and the service client can read the customer's table.
        assert [t.table_id for t in service.list_tables(dataset)] == []
        assert query_rows(service, f"SELECT event_id FROM `{customer_dataset}.events`") == [{"event_id": "c1"}]
    finally:
        customer.delete_dataset(customer_dataset, delete_contents=True, not_found_ok=True)
        customer.close()
        service.close()


@pytest.mark.emulator
def test_pubsub_publish_then_synchronous_pull_and_ack(local_stack: LocalStack) -> None:
    publisher = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST comes from the local_stack fixture
    with pubsub_v1.SubscriberClient() as subscriber:
        topic = publisher.topic_path(local_stack.project, unique("topic"))
        subscription = subscriber.subscription_path(local_stack.project, unique("sub"))
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)

        publisher.publish(topic, b'{"hello": "world"}', origin="test").result(timeout=10)
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10, retry=Retry(deadline=10))
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])

        assert [(m.message.data, dict(m.message.attributes)) for m in response.received_messages] == [
            (b'{"hello": "world"}', {"origin": "test"})
        ]
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)
    publisher.transport.close()


def test_env_names_the_emulators_and_project(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = LocalStack(project="some-project")  # not started: ports are chosen up front
    for name in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "GCP_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)  # restored after the test

    stack.apply_env()

    assert os.environ["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{stack.pubsub.port}"
    assert os.environ["BIGQUERY_EMULATOR_HOST"] == f"127.0.0.1:{stack.bigquery.port}"
    assert os.environ["GCP_PROJECT_ID"] == "some-project"
    assert stack.bigquery.endpoint == f"http://127.0.0.1:{stack.bigquery.port}"
    stack.stop()  # stopping a stack that never started is a no-op


def test_missing_pubsub_emulator_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pubsub_emulator, "EMULATOR_BINARY", tmp_path / "absent")
    monkeypatch.setattr(pubsub_emulator.shutil, "which", lambda _name: None)

    with pytest.raises(EmulatorNotInstalledError, match="google-cloud-cli-pubsub-emulator") as raised:
        pubsub_emulator.emulator_command(8085, "p", tmp_path)
    assert "gcloud components install pubsub-emulator" in str(raised.value)
    assert "Java" in str(raised.value)


def test_bqemulator_launcher_refuses_an_unpatched_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bqemulator_launcher, "version", lambda _dist: "9.9.9")

    with pytest.raises(ImportError, match="patches bqemulator 1.4.0, but bqemulator 9.9.9"):
        bqemulator_launcher._check_bqemulator_version()


def test_start_failure_reports_exit_code_and_log_tail(tmp_path: Path) -> None:
    process = ManagedProcess("fake emulator", ["sh", "-c", "echo cannot bind port; exit 3"], tmp_path / "log")
    process.start()

    with pytest.raises(EmulatorStartError, match=r"(?s)exited with code 3.*cannot bind port"):
        wait_until_ready(process, lambda: False, timeout=10, waiting_for="readiness")
    process.stop()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # Like gcloud starting the emulator's JVM: the child forks a grandchild and waits.
    pid_file = tmp_path / "grandchild.pid"
    process = ManagedProcess("fake", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], tmp_path / "log")
    process.start()
    wait_until_ready(process, lambda: pid_file.exists() and pid_file.read_text().strip() != "", 10, "the grandchild")
    grandchild = int(pid_file.read_text())

    process.stop(timeout=5)

    assert process.exit_code is None  # forgotten once stopped
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); check whether it has really run to its end.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"
