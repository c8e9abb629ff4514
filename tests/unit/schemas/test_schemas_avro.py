"""The Avro form of the run request, registered as a Pub/Sub schema on the emulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from google.api_core import exceptions
from google.pubsub_v1 import types

from convergence.infra import close_publisher, publisher_client, schema_client
from convergence.schemas import RunRequest, avro_schema_text, to_avro_json
from convergence.settings.model import Settings

pytestmark = pytest.mark.emulator


def test_avro_topic_schema_accepts_avro_json_and_refuses_plain_json(
    pubsub_settings: Callable[..., Settings],
) -> None:
    settings = pubsub_settings()
    project = f"projects/{settings.gcp_project_id}"
    schema_id = f"run-request-v1-{uuid.uuid4().hex[:8]}"
    client = schema_client(settings)
    created = client.create_schema(
        parent=project, schema_id=schema_id,
        schema=types.Schema(type_=types.Schema.Type.AVRO, definition=avro_schema_text()),
    )  # fmt: skip
    request = RunRequest.create(
        "acme_corp", "gcp/cost/billing", {"day": "2026-02-01", "limit": 5, "ratio": 0.5, "dry": True, "x": None},
        trace_id="trace-1",
    )  # fmt: skip

    def validate(data: dict) -> None:
        client.validate_message(request={
            "parent": project, "name": created.name, "message": json.dumps(data).encode(),
            "encoding": types.Encoding.JSON,
        })  # fmt: skip

    validate(to_avro_json(request))
    validate(to_avro_json(RunRequest.create("acme_corp", "gcp/cost/billing")))  # no trace id, no parameters
    # The plain JSON contract is not Avro's JSON encoding (unions are unwrapped): why no schema is attached.
    with pytest.raises(exceptions.InvalidArgument):
        validate(request.to_dict())

    publisher = publisher_client(settings)
    try:
        topic = settings.topic_path(f"schema-bound-{uuid.uuid4().hex[:8]}")
        publisher.create_topic(request=types.Topic(
            name=topic, schema_settings=types.SchemaSettings(schema=created.name, encoding=types.Encoding.JSON),
        ))  # fmt: skip
        publisher.publish(topic, json.dumps(to_avro_json(request)).encode()).result(timeout=30)
        with pytest.raises(exceptions.InvalidArgument):
            publisher.publish(topic, request.to_json()).result(timeout=30)
    finally:
        close_publisher(publisher)
