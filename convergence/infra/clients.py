"""Pub/Sub clients built from settings: the emulator when ``pubsub_emulator_host`` is set, else ADC.

The client libraries only look at the PUBSUB_EMULATOR_HOST environment variable; building the insecure
channel here lets settings (not the process environment) decide, so tests and tools can point one client
at one emulator without touching os.environ.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1 import types
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.schema_service.transports import SchemaServiceGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from convergence.observability import otel
from convergence.settings.model import Settings

# gRPC caps received messages at 4 MiB by default; Pub/Sub messages reach 10 MB.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _emulator_channel(settings: Settings) -> grpc.Channel | None:
    if not settings.pubsub_emulator_host:
        return None
    return grpc.insecure_channel(settings.pubsub_emulator_host, options=_CHANNEL_OPTIONS)


def publisher_client(settings: Settings, **kwargs: Any) -> pubsub_v1.PublisherClient:
    """Thread-safe: create one per process and role, reuse it. kwargs: batch_settings, publisher_options."""
    channel = _emulator_channel(settings)
    if channel is not None:
        kwargs["transport"] = PublisherGrpcTransport(channel=channel)
    if otel.configure_tracing(settings):  # the client's create spans carry the context into the attributes
        options = kwargs.get("publisher_options") or types.PublisherOptions()
        kwargs["publisher_options"] = options._replace(enable_open_telemetry_tracing=True)
    return pubsub_v1.PublisherClient(**kwargs)


def subscriber_client(settings: Settings, **kwargs: Any) -> pubsub_v1.SubscriberClient:
    channel = _emulator_channel(settings)
    if channel is not None:
        kwargs["transport"] = SubscriberGrpcTransport(channel=channel)
    if otel.configure_tracing(settings):  # subscribe spans, children of the publisher's create span
        options = kwargs.get("subscriber_options") or types.SubscriberOptions()
        kwargs["subscriber_options"] = options._replace(enable_open_telemetry_tracing=True)
    return pubsub_v1.SubscriberClient(**kwargs)


def schema_client(settings: Settings) -> pubsub_v1.SchemaServiceClient:
    channel = _emulator_channel(settings)
    if channel is not None:
        return pubsub_v1.SchemaServiceClient(transport=SchemaServiceGrpcTransport(channel=channel))
    return pubsub_v1.SchemaServiceClient()


def close_publisher(client: pubsub_v1.PublisherClient) -> None:
    """Send what is batched (futures still complete), then release the channel. Idempotent."""
    try:
        client.stop()
    except RuntimeError:
        return  # already stopped and closed
    client.transport.close()
