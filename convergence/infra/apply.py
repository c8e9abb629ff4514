"""Make Pub/Sub match a Topology, idempotently: create what is missing, update what may be updated,
report what cannot be changed in place (never delete: that would lose unacked messages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types

from convergence.infra.clients import close_publisher, publisher_client, subscriber_client
from convergence.infra.topology import SubscriptionSpec, TopicSpec, Topology
from convergence.settings.model import Settings

log = structlog.get_logger(__name__)

# Errors that mean "the service will not make this change", as opposed to "try again".
_REFUSED = (exceptions.InvalidArgument, exceptions.FailedPrecondition, exceptions.MethodNotImplemented)


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DRIFT = "drift"  # differences remain that apply cannot fix


@dataclass(frozen=True)
class ApplyItem:
    kind: str  # "topic" | "subscription"
    name: str
    action: Action
    updated: tuple[str, ...] = ()
    cannot_change: tuple[str, ...] = ()

    def line(self) -> str:
        notes = [f"updated {u}" for u in self.updated] + [f"CANNOT CHANGE {c}" for c in self.cannot_change]
        suffix = f"  ({'; '.join(notes)})" if notes else ""
        return f"{self.action.value:<9} {self.kind:<12} {self.name}{suffix}"


@dataclass
class ApplyReport:
    items: list[ApplyItem] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(item.action in (Action.CREATED, Action.UPDATED) for item in self.items)

    @property
    def drift(self) -> list[ApplyItem]:
        return [item for item in self.items if item.action is Action.DRIFT]

    @property
    def ok(self) -> bool:
        return not self.drift

    def action_of(self, name: str) -> Action:
        return next(item.action for item in self.items if item.name == name)

    def lines(self) -> list[str]:
        return [item.line() for item in self.items]


@dataclass(frozen=True)
class _Field:
    """One managed field: how to read a comparable value, and whether UpdateSubscription may change it."""

    name: str
    read: Callable[[types.Subscription], Any]
    mutable: bool


def _has(message: Any, name: str) -> bool:
    return message._pb.HasField(name)  # proto-plus hides presence; the raw message keeps it


def _retry(sub: types.Subscription) -> Any:
    if not _has(sub, "retry_policy"):
        return None
    policy = sub.retry_policy
    return (policy.minimum_backoff.total_seconds(), policy.maximum_backoff.total_seconds())


def _dead_letter(sub: types.Subscription) -> Any:
    if not _has(sub, "dead_letter_policy") or not sub.dead_letter_policy.dead_letter_topic:
        return None
    return (sub.dead_letter_policy.dead_letter_topic, sub.dead_letter_policy.max_delivery_attempts)


def _push(sub: types.Subscription) -> Any:
    config = sub.push_config
    if not config.push_endpoint:
        return None
    oidc = config.oidc_token if _has(config, "oidc_token") else None
    return (config.push_endpoint, oidc.service_account_email if oidc else None,
            (oidc.audience or None) if oidc else None)  # fmt: skip


def _expiration(sub: types.Subscription) -> Any:
    if not _has(sub, "expiration_policy"):
        return "default (31 days idle)"
    policy = sub.expiration_policy
    return policy.ttl.total_seconds() if _has(policy, "ttl") else "never"


_FIELDS = (
    _Field("topic", lambda s: s.topic, mutable=False),
    _Field("filter", lambda s: s.filter, mutable=False),
    _Field("enable_message_ordering", lambda s: s.enable_message_ordering, mutable=False),
    _Field("ack_deadline_seconds", lambda s: s.ack_deadline_seconds, mutable=True),
    _Field("retry_policy", _retry, mutable=True),
    _Field("dead_letter_policy", _dead_letter, mutable=True),
    _Field("push_config", _push, mutable=True),
    _Field("expiration_policy", _expiration, mutable=True),
)


def _shown(name: str, value: Any) -> str:
    if name == "push_config" and value:
        value = (_safe_url(value[0]), *value[1:])
    return repr(value)


def _safe_url(url: str) -> str:
    """Push endpoints sometimes carry a token in the query string: never show it."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + ("?..." if parts.query else "")


def _labels_missing(current: Any, desired: Any) -> bool:
    return any(current.get(key) != value for key, value in desired.items())


class TopologyApplier:
    """Applies specs with the clients it is given (admin calls only; it never publishes or pulls)."""

    def __init__(self, project: str, publisher: pubsub_v1.PublisherClient,
                 subscriber: pubsub_v1.SubscriberClient) -> None:  # fmt: skip
        self.project = project
        self.publisher = publisher
        self.subscriber = subscriber

    def ensure_topic(self, spec: TopicSpec) -> ApplyItem:
        desired = types.Topic(name=f"projects/{self.project}/topics/{spec.name}", labels=dict(spec.labels))
        try:
            self.publisher.create_topic(request=desired)
            return self._done("topic", spec.name, Action.CREATED)
        except exceptions.AlreadyExists:
            pass
        current = self.publisher.get_topic(topic=desired.name)
        if not _labels_missing(current.labels, spec.labels):
            return self._done("topic", spec.name, Action.UNCHANGED)
        merged = types.Topic(name=desired.name, labels={**current.labels, **spec.labels})
        mask = field_mask_pb2.FieldMask(paths=["labels"])
        try:
            self.publisher.update_topic(request={"topic": merged, "update_mask": mask})
            change = f"labels: add {dict(spec.labels)!r}"
            return self._done("topic", spec.name, Action.UPDATED, updated=(change,))
        except _REFUSED as error:
            return self._done("topic", spec.name, Action.DRIFT, cannot_change=(f"labels: {error.message}",))

    def ensure_subscription(self, spec: SubscriptionSpec) -> ApplyItem:
        desired = spec.to_proto(self.project)
        try:
            self.subscriber.create_subscription(request=desired)
            return self._done("subscription", spec.name, Action.CREATED)
        except exceptions.AlreadyExists:
            pass
        current = self.subscriber.get_subscription(subscription=desired.name)
        return self._reconcile(spec, current, desired)

    def _reconcile(self, spec: SubscriptionSpec, current: types.Subscription,
                   desired: types.Subscription) -> ApplyItem:  # fmt: skip
        mutable: list[str] = []  # update mask paths
        changes: list[str] = []  # the same, with old and new values, for the report
        immutable: list[str] = []
        for item in _FIELDS:
            have, want = item.read(current), item.read(desired)
            if item.name == "push_config" and want and have and want[2] is None:
                have = have[:2] + (None,)  # no audience asked for: Pub/Sub's default (the endpoint) is fine
            if have == want:
                continue
            if item.mutable:
                mutable.append(item.name)
                changes.append(f"{item.name}: {_shown(item.name, have)} -> {_shown(item.name, want)}")
            else:
                immutable.append(f"{item.name}: {have!r} -> {want!r} (immutable: delete and re-create)")
        if _labels_missing(current.labels, spec.labels):
            mutable.append("labels")
            changes.append(f"labels: add {dict(spec.labels)!r}")
            desired.labels = {**current.labels, **spec.labels}  # keep labels others added
        refused: list[str] = []
        if mutable:
            try:
                self.subscriber.update_subscription(
                    request={"subscription": desired, "update_mask": field_mask_pb2.FieldMask(paths=mutable)}
                )
            except _REFUSED as error:
                refused = [f"{name}: {error.message}" for name in mutable]
        updated = () if refused else tuple(changes)
        cannot_change = tuple(immutable + refused)
        action = Action.DRIFT if cannot_change else Action.UPDATED if updated else Action.UNCHANGED
        return self._done("subscription", spec.name, action, updated=updated, cannot_change=cannot_change)

    def delete_subscription(self, name: str) -> bool:
        """For short-lived follower subscriptions. True if it existed."""
        try:
            self.subscriber.delete_subscription(subscription=f"projects/{self.project}/subscriptions/{name}")
            return True
        except exceptions.NotFound:
            return False

    @staticmethod
    def _done(kind: str, name: str, action: Action, **notes: tuple[str, ...]) -> ApplyItem:
        item = ApplyItem(kind, name, action, **notes)
        log_method = log.warning if action is Action.DRIFT else log.info
        log_method("pubsub.apply", kind=kind, name=name, action=action.value, **notes)
        return item


@contextmanager
def applier(settings: Settings) -> Iterator[TopologyApplier]:
    """A TopologyApplier on fresh clients, closed afterwards."""
    publisher = publisher_client(settings)
    subscriber = subscriber_client(settings)
    try:
        yield TopologyApplier(settings.gcp_project_id, publisher, subscriber)
    finally:
        subscriber.close()
        close_publisher(publisher)


def apply(topology: Topology, settings: Settings) -> ApplyReport:
    """Create or reconcile every topic, then every subscription (dead-letter topics exist first)."""
    report = ApplyReport()
    with applier(settings) as target:
        report.items.extend(target.ensure_topic(spec) for spec in topology.topics)
        report.items.extend(target.ensure_subscription(spec) for spec in topology.subscriptions)
    return report


def ensure_subscription(spec: SubscriptionSpec, settings: Settings) -> ApplyItem:
    """One subscription (e.g. a follower's on the events topic), created or reconciled."""
    with applier(settings) as target:
        return target.ensure_subscription(spec)


def delete_subscription(name: str, settings: Settings) -> bool:
    with applier(settings) as target:
        return target.delete_subscription(name)
