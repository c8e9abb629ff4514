"""What happened to one delivery, and what Pub/Sub should do with it (the ack policy).

| case                                                        | disposition | HTTP (push) |
|-------------------------------------------------------------|-------------|-------------|
| success                                                     | ACK         | 204         |
| malformed / schema-invalid, unknown pipeline/org, gate no   | ACK         | 204         |
| permanent step failure (bad credentials, 4xx, config, timeout) | ACK      | 204         |
| already succeeded (redelivery of a finished run_id)         | ACK         | 204         |
| transient failure (5xx, 429 after backoff, network)         | NACK        | 503         |
| handed off (org over its cap, push run too long for push)   | ACK after the copy is published | 204 |
| shutting down before the run started                        | NACK        | 503         |

Rejections are acked on purpose: redelivering them can never succeed. 4xx is never used for a case
that should be retried, because Pub/Sub push treats every non-2xx as a nack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Disposition(StrEnum):
    ACK = "ack"
    NACK = "nack"


class OutcomeCode(StrEnum):
    """Codes of outcomes the consumer decides itself (a failed run or a rejection carries the ErrorCode or
    RejectCode it failed with). Logs and the push response carry these values, so a value never changes."""

    INFRASTRUCTURE_ERROR = "INFRASTRUCTURE_ERROR"  # the run log or a queue failed before the run finished
    EVENTS_UNAVAILABLE = "EVENTS_UNAVAILABLE"  # the outcome is recorded but its final event is not out
    DUPLICATE_RUN = "DUPLICATE_RUN"  # the same run_id is already running in this process
    ALREADY_SUCCEEDED = "ALREADY_SUCCEEDED"  # a redelivery of a run that finished with success
    HANDED_OFF_TO_PULL = "HANDED_OFF_TO_PULL"  # too long for push: republished for the pull consumer
    FANOUT_FAILED = "FANOUT_FAILED"  # a schedule tick could not fan out its runs
    UNKNOWN = "UNKNOWN"  # the run failed without saying why


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RETRY = "retry"
    DUPLICATE = "duplicate"
    HANDED_OFF = "handed_off"
    SHUTTING_DOWN = "shutting_down"


_DISPOSITION = {
    OutcomeKind.SUCCEEDED: Disposition.ACK,
    OutcomeKind.REJECTED: Disposition.ACK,
    OutcomeKind.FAILED: Disposition.ACK,
    OutcomeKind.TIMED_OUT: Disposition.ACK,
    OutcomeKind.DUPLICATE: Disposition.ACK,
    OutcomeKind.HANDED_OFF: Disposition.ACK,
    OutcomeKind.RETRY: Disposition.NACK,
    OutcomeKind.SHUTTING_DOWN: Disposition.NACK,
}


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    run_id: str | None = None
    org_slug: str | None = None
    code: str | None = None
    message: str = ""
    details: dict = field(default_factory=dict)

    @property
    def disposition(self) -> Disposition:
        return _DISPOSITION[self.kind]

    @property
    def http_status(self) -> int:
        """Push delivery: any 2xx acks, anything else nacks."""
        return 204 if self.disposition is Disposition.ACK else 503
