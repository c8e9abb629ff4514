"""Avro form of the run request, for a Pub/Sub topic schema (see docs/pubsub-topology.md).

Pub/Sub validates JSON-encoded messages with Avro's JSON encoding, where a union value is wrapped in its
branch name ({"string": "x"}) and every field must be present. The plain JSON contract is therefore not
Avro JSON; ``to_avro_json`` converts a request into the form a schema-bound topic accepts.
"""

from __future__ import annotations

from typing import Any

from convergence.schemas.registry import RUN_REQUEST_V1_AVRO, schema_text
from convergence.schemas.run_request import RunRequest


def avro_schema_text() -> str:
    return schema_text(RUN_REQUEST_V1_AVRO)


def _branch(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):  # bool before int: True is an int in Python
        return {"boolean": value}
    if isinstance(value, int):
        return {"long": value}
    if isinstance(value, float):
        return {"double": value}
    return {"string": value}


def to_avro_json(request: RunRequest) -> dict[str, Any]:
    data = request.to_dict()
    data["parameters"] = {key: _branch(value) for key, value in data["parameters"].items()}
    data["trace_id"] = _branch(data["trace_id"])
    return data
