"""The Pub/Sub resources of the service, derived from settings (the same on the emulator and on GCP).

Pull mode (default): pipeline-requests -> pull subscription read by `convergence consume`.
Push mode (push_endpoint set): pipeline-requests -> push subscription to `convergence serve`; the pull
subscription reads the handoff topic instead, where the push handler forwards runs longer than a push
request may last. Either way only one subscription consumes each request, so a run is delivered once.

Decisions:
- Every consuming subscription has a retry policy: without one a nack is redelivered at once, in a loop.
- Run requests dead-letter to one topic, drained by `consume` (runs marked DEAD_LETTERED).
- Ticks dead-letter to their own topic, held for inspection: the requests DLQ drainer decodes run
  requests only, and a tick that keeps failing must neither loop forever nor be dropped silently.
- Dead-letter subscriptions never expire (rarely read, they would otherwise expire after 31 idle days)
  and have no dead-letter policy of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from google.protobuf import duration_pb2
from google.pubsub_v1 import types

from convergence.settings.model import Settings

LABELS: Mapping[str, str] = MappingProxyType({"app": "convergence"})


def _labels() -> Mapping[str, str]:
    return dict(LABELS)


FOLLOWER_TTL = timedelta(days=1)  # Pub/Sub's minimum expiration; followers are short-lived


class TopologyError(ValueError):
    """The settings describe a topology Pub/Sub would refuse."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    labels: Mapping[str, str] = field(default_factory=_labels)


@dataclass(frozen=True)
class PushSpec:
    endpoint: str
    service_account_email: str | None = None  # OIDC token identity; None: unauthenticated push
    audience: str | None = None  # defaults to the endpoint on Pub/Sub's side


@dataclass(frozen=True)
class RetrySpec:
    min_backoff_seconds: int
    max_backoff_seconds: int


@dataclass(frozen=True)
class DeadLetterSpec:
    topic: str
    max_delivery_attempts: int


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    topic: str
    ack_deadline_seconds: int
    retry: RetrySpec | None = None
    dead_letter: DeadLetterSpec | None = None
    push: PushSpec | None = None
    filter: str = ""
    enable_message_ordering: bool = False
    expiration_ttl: timedelta | None = None  # None: never expires
    labels: Mapping[str, str] = field(default_factory=_labels)

    def to_proto(self, project: str) -> types.Subscription:
        subscription = types.Subscription(
            name=f"projects/{project}/subscriptions/{self.name}",
            topic=f"projects/{project}/topics/{self.topic}",
            ack_deadline_seconds=self.ack_deadline_seconds,
            filter=self.filter,
            enable_message_ordering=self.enable_message_ordering,
            labels=dict(self.labels),
            expiration_policy=_expiration(self.expiration_ttl),
            push_config=_push_config(self.push),
        )
        if self.retry is not None:
            subscription.retry_policy = types.RetryPolicy(
                minimum_backoff=duration_pb2.Duration(seconds=self.retry.min_backoff_seconds),
                maximum_backoff=duration_pb2.Duration(seconds=self.retry.max_backoff_seconds),
            )
        if self.dead_letter is not None:
            subscription.dead_letter_policy = types.DeadLetterPolicy(
                dead_letter_topic=f"projects/{project}/topics/{self.dead_letter.topic}",
                max_delivery_attempts=self.dead_letter.max_delivery_attempts,
            )
        return subscription


def _expiration(ttl: timedelta | None) -> types.ExpirationPolicy:
    if ttl is None:
        return types.ExpirationPolicy()  # an empty policy means "never expire"
    return types.ExpirationPolicy(ttl=duration_pb2.Duration(seconds=int(ttl.total_seconds())))


def _push_config(push: PushSpec | None) -> types.PushConfig:
    if push is None:
        return types.PushConfig()  # empty: a pull subscription
    config = types.PushConfig(push_endpoint=push.endpoint)
    if push.service_account_email:
        config.oidc_token = types.PushConfig.OidcToken(
            service_account_email=push.service_account_email, audience=push.audience or ""
        )
    return config


@dataclass(frozen=True)
class Topology:
    project: str
    topics: tuple[TopicSpec, ...]
    subscriptions: tuple[SubscriptionSpec, ...]
    worker_subscription: str  # what `convergence consume` pulls run requests from
    dead_letter_subscription: str  # what `consume` drains to mark runs DEAD_LETTERED

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return _TopologyBuilder(settings).build()

    def subscription(self, name: str) -> SubscriptionSpec:
        return next(spec for spec in self.subscriptions if spec.name == name)


class _TopologyBuilder:
    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def build(self) -> Topology:
        s = self.s
        retry = self._retry()
        requests_dlq = DeadLetterSpec(s.dead_letter_topic, s.max_delivery_attempts)
        ticks_dlq = DeadLetterSpec(s.ticks_dead_letter_topic, s.max_delivery_attempts)
        push = self._push()
        worker_topic = s.handoff_topic if push else s.requests_topic
        topic_names = [s.requests_topic, s.events_topic, s.ticks_topic, s.dead_letter_topic,
                       s.ticks_dead_letter_topic, s.overflow_topic] + ([s.handoff_topic] if push else [])  # fmt: skip
        deadline = s.ack_deadline_seconds
        subscriptions = [
            SubscriptionSpec(s.requests_subscription, worker_topic, deadline, retry, requests_dlq),
            SubscriptionSpec(s.overflow_subscription, s.overflow_topic, deadline, retry, requests_dlq),
            SubscriptionSpec(s.ticks_subscription, s.ticks_topic, deadline, retry, ticks_dlq),
            SubscriptionSpec(s.dead_letter_subscription, s.dead_letter_topic, deadline, retry),
            SubscriptionSpec(s.ticks_dead_letter_subscription, s.ticks_dead_letter_topic, deadline, retry),
        ]
        if push:
            subscriptions.append(
                SubscriptionSpec(s.push_subscription, s.requests_topic, s.push_ack_deadline_seconds, retry,
                                 requests_dlq, push=push)
            )  # fmt: skip
        self._check_distinct(topic_names, [spec.name for spec in subscriptions])
        return Topology(
            project=s.gcp_project_id,
            topics=tuple(TopicSpec(name) for name in topic_names),
            subscriptions=tuple(subscriptions),
            worker_subscription=s.requests_subscription,
            dead_letter_subscription=s.dead_letter_subscription,
        )

    def _retry(self) -> RetrySpec:
        if self.s.retry_min_backoff_seconds > self.s.retry_max_backoff_seconds:
            raise TopologyError(
                f"retry_min_backoff_seconds ({self.s.retry_min_backoff_seconds}) is larger than "
                f"retry_max_backoff_seconds ({self.s.retry_max_backoff_seconds})"
            )
        return RetrySpec(self.s.retry_min_backoff_seconds, self.s.retry_max_backoff_seconds)

    def _push(self) -> PushSpec | None:
        endpoint = self.s.push_endpoint
        if not endpoint:
            return None
        secure = endpoint.startswith("https://")
        if not secure and not (self.s.pubsub_emulator_host and endpoint.startswith("http://")):
            raise TopologyError(f"push_endpoint must be an https:// URL (got {endpoint[:80]!r})")
        if self.s.is_production and not self.s.push_service_account_email:
            raise TopologyError("push_service_account_email is required for push in production (OIDC)")
        return PushSpec(endpoint, self.s.push_service_account_email, self.s.push_audience)

    @staticmethod
    def _check_distinct(topics: list[str], subscriptions: list[str]) -> None:
        for kind, names in (("topic", topics), ("subscription", subscriptions)):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise TopologyError(f"{kind} names must differ, used twice: {', '.join(duplicates)}")


def follower_subscription(
    settings: Settings, name: str, run_id: str | None = None, ttl: timedelta = FOLLOWER_TTL
) -> SubscriptionSpec:
    """An events subscription for one follower (`publish run --wait`). Ordered (events are published with
    an ordering key chosen by org, so each run's events arrive in order). The filter is applied by Pub/Sub but NOT by
    the emulator: followers must also filter by run_id themselves."""
    if run_id is not None and ('"' in run_id or "\\" in run_id):
        raise TopologyError("run_id must not contain quotes or backslashes (it goes into a filter)")
    return SubscriptionSpec(
        name=name,
        topic=settings.events_topic,
        ack_deadline_seconds=settings.ack_deadline_seconds,
        filter=f'attributes.run_id = "{run_id}"' if run_id else "",
        enable_message_ordering=True,
        expiration_ttl=ttl,
    )
