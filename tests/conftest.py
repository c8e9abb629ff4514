"""Shared fixtures: the embedded local stack (one per test session), settings and clients on it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from convergence.settings.model import pubsub_resource_fields

# ---- The local stack: both emulators, started once per session ----


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Any]:
    from convergence.devstack.stack import LocalStack
    from convergence.settings import reset_settings

    stack = LocalStack()
    stack.start()
    stack.apply_env()
    reset_settings()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def bq_client(local_stack: Any) -> Any:
    return local_stack.bigquery_client()


# ---- Pub/Sub helpers (schemas/publisher/infra tests; usable by consumer tests) ----

PUBSUB_NAME_FIELDS = pubsub_resource_fields()


@pytest.fixture
def pubsub_settings(local_stack: Any) -> Callable[..., Any]:
    """Factory: Settings on the emulator whose topic and subscription names are unique to each call, so
    tests never see each other's messages. Keyword arguments override any setting."""
    from convergence.settings.model import Settings, load_settings

    def make(**overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        names = {name: f"{Settings.model_fields[name].default}-{suffix}" for name in PUBSUB_NAME_FIELDS}
        base = {"pubsub_emulator_host": local_stack.pubsub.host, "gcp_project_id": local_stack.project}
        return load_settings(**{**base, **names, **overrides})

    return make


@pytest.fixture
def pull_messages(local_stack: Any) -> Iterator[Callable[..., list[Any]]]:
    """pull(settings, subscription, count, timeout=10.0, ack=True) -> up to `count` received messages.

    Synchronous pull: returns as soon as `count` arrived, or what came within `timeout` (an empty
    emulator subscription holds each pull about 4 s, so calls are capped at 2 s and repeated)."""
    from google.api_core import exceptions

    from convergence.infra.clients import subscriber_client

    clients: list[Any] = []

    def pull(settings: Any, subscription: str, count: int, timeout: float = 10.0, ack: bool = True) -> list[Any]:
        subscriber = subscriber_client(settings)
        clients.append(subscriber)
        path = settings.subscription_path(subscription)
        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and (left := deadline - time.monotonic()) > 0:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": min(1000, count - len(received))},
                    timeout=min(left, 2.0),
                )
            except exceptions.DeadlineExceeded:
                continue
            batch = list(response.received_messages)
            if batch and ack:
                subscriber.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in batch]})
            received.extend(batch)
        return received

    yield pull
    for subscriber in clients:
        subscriber.close()


@pytest.fixture(scope="module")
def tenancy_env(local_stack: Any, tmp_path_factory: Any) -> tuple[Any, Any, Any]:
    """(settings, BigQuery client, local keyring) on a freshly bootstrapped central dataset of its own."""
    from convergence.kms.local import LocalKeyring
    from convergence.warehouse.bootstrap import bootstrap
    from convergence.warehouse.client import make_client
    from tests.support.warehouse import emulator_settings

    settings = emulator_settings(local_stack, local_keyring_path=tmp_path_factory.mktemp("keys") / "keyring.key")
    client = make_client(settings)
    assert bootstrap(client, settings).ok
    return settings, client, LocalKeyring(settings.local_keyring_path)
