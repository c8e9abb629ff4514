"""Flow control and lease settings derived from the worker count and the longest pipeline timeout.

`max_lease_duration` counts from when a message enters the client, not from when its run starts, so
it must cover the wait for a slot plus the longest run; otherwise Pub/Sub delivers a second copy of a
message that is still running (the client's lease management stops extending a message past it).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.cloud.pubsub_v1.types import FlowControl


@dataclass(frozen=True)
class FlowPlan:
    max_messages: int
    max_bytes: int
    max_lease_duration: int
    max_lease_extension: int
    backlog_per_org: int

    @classmethod
    def derive(cls, *, workers: int, per_org: int, longest_timeout_seconds: float,
               max_lease_extension: int, max_bytes: int = 10 * 1024 * 1024) -> FlowPlan:
        # Each org may keep `per_org` runs waiting here besides its running ones; beyond that its
        # messages are handed off so they cannot fill flow control and starve other orgs.
        backlog_per_org = per_org
        max_messages = workers * 2
        # A waiting message waits at most for one full run of the slot ahead of it.
        lease = int(2 * longest_timeout_seconds + 300)
        return cls(max_messages, max_bytes, lease, max_lease_extension, backlog_per_org)

    def for_overflow(self, *, per_org: int, longest_timeout_seconds: float) -> FlowPlan:
        """The overflow subscription's plan: its messages were handed off once already and only wait here
        (never handed off again), so a message can wait behind up to `max_messages` runs of its own org,
        `per_org` at a time; the lease covers that wait plus its own run."""
        max_messages = max(self.max_messages // 2, per_org)
        runs_ahead = -(-max_messages // per_org)  # ceiling
        lease = int((runs_ahead + 1) * longest_timeout_seconds + 300)
        return FlowPlan(max_messages, self.max_bytes, lease, self.max_lease_extension, backlog_per_org=max_messages)

    def flow_control(self) -> FlowControl:
        return FlowControl(
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            max_lease_duration=self.max_lease_duration,
            # Bounded extensions: a crashed worker's messages come back within this many seconds.
            max_duration_per_lease_extension=self.max_lease_extension,
            min_duration_per_lease_extension=min(60, self.max_lease_extension),
        )


# The dead-letter drain records each dead-lettered request (one run-log row): a few at a time is plenty, and a
# 10-minute lease covers a row write that BigQuery is slow to take.
DEAD_LETTER_PLAN = FlowPlan(max_messages=10, max_bytes=10 * 1024 * 1024, max_lease_duration=600,
                            max_lease_extension=60, backlog_per_org=1000)
# Ticks are rare (one per Cloud Scheduler period) and each fans out to every org: one at a time, a second
# one leased behind it.
TICKS_PLAN = FlowPlan(max_messages=2, max_bytes=1024 * 1024, max_lease_duration=600, max_lease_extension=60,
                      backlog_per_org=100)
