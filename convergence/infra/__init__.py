"""Pub/Sub topology: the topics and subscriptions the service needs, built from settings and applied
idempotently on the emulator or a real project (`convergence infra apply`). See docs/pubsub-topology.md."""

from convergence.infra.apply import (
    Action,
    ApplyItem,
    ApplyReport,
    TopologyApplier,
    applier,
    apply,
    delete_subscription,
    ensure_subscription,
)
from convergence.infra.clients import close_publisher, publisher_client, schema_client, subscriber_client
from convergence.infra.topology import (
    DeadLetterSpec,
    PushSpec,
    RetrySpec,
    SubscriptionSpec,
    TopicSpec,
    Topology,
    TopologyError,
    follower_subscription,
)

__all__ = [
    "Action",
    "ApplyItem",
    "ApplyReport",
    "DeadLetterSpec",
    "PushSpec",
    "RetrySpec",
    "SubscriptionSpec",
    "TopicSpec",
    "Topology",
    "TopologyApplier",
    "TopologyError",
    "applier",
    "apply",
    "close_publisher",
    "delete_subscription",
    "ensure_subscription",
    "follower_subscription",
    "publisher_client",
    "schema_client",
    "subscriber_client",
]
