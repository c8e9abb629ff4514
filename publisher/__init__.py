"""Publishing: run requests (CLI, scheduler, HTTP door, DLQ replay) and pipeline events (consumer)."""

from convergence.publisher.events import EventPublisher
from convergence.publisher.requests import REQUEST_BATCH, PublishError, RequestPublisher

__all__ = ["REQUEST_BATCH", "EventPublisher", "PublishError", "RequestPublisher"]
