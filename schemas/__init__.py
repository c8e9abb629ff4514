"""Message contracts: versioned JSON Schema files (package data) and the models that match them.

`run_request.v1.json` and `pipeline_event.v1.json` are the source of truth; incoming messages are
validated with the same files that `docs/pubsub-topology.md` and other publishers use.
"""

from convergence.schemas.avro import avro_schema_text, to_avro_json
from convergence.schemas.errors import MessageRejected, RejectCode
from convergence.schemas.events import (
    MAX_EVENT_BYTES,
    EventError,
    EventType,
    PipelineEvent,
    decode_pipeline_event,
    validate_pipeline_event,
)
from convergence.schemas.registry import PIPELINE_EVENT_V1, RUN_REQUEST_V1, RUN_REQUEST_V1_AVRO, schema, schema_text
from convergence.schemas.run_request import (
    MAX_RUN_REQUEST_BYTES,
    SCHEMA_VERSION,
    RunRequest,
    Trigger,
    decode_run_request,
    deterministic_run_id,
    new_run_id,
    validate_run_request,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_RUN_REQUEST_BYTES",
    "PIPELINE_EVENT_V1",
    "RUN_REQUEST_V1",
    "RUN_REQUEST_V1_AVRO",
    "SCHEMA_VERSION",
    "EventError",
    "EventType",
    "MessageRejected",
    "PipelineEvent",
    "RejectCode",
    "RunRequest",
    "Trigger",
    "avro_schema_text",
    "decode_pipeline_event",
    "decode_run_request",
    "deterministic_run_id",
    "new_run_id",
    "schema",
    "schema_text",
    "to_avro_json",
    "validate_pipeline_event",
    "validate_run_request",
]
