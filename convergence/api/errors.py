"""The codes of the HTTP door's own error responses (`{"detail", "code", "request_id"}`). API clients branch
on them, so a value never changes. Refusals passed through from a step, the loader, the gate or a message
rejection keep the code of their own catalogue (ErrorCode, RejectCode, the gate's codes)."""

from __future__ import annotations

from enum import StrEnum


class ApiErrorCode(StrEnum):
    # the request itself
    INVALID_REQUEST_ID = "INVALID_REQUEST_ID"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    INVALID_JSON = "INVALID_JSON"
    JSON_TOO_DEEP = "JSON_TOO_DEEP"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    NON_FINITE_NUMBER = "NON_FINITE_NUMBER"
    INVALID_BODY = "INVALID_BODY"
    RATE_LIMITED = "RATE_LIMITED"
    # keys
    API_KEY_MISSING = "API_KEY_MISSING"
    API_KEY_INVALID = "API_KEY_INVALID"
    API_KEY_WRONG_ORG = "API_KEY_WRONG_ORG"
    ROOT_KEY_NOT_CONFIGURED = "ROOT_KEY_NOT_CONFIGURED"
    ROOT_KEY_MISSING = "ROOT_KEY_MISSING"
    ROOT_KEY_INVALID = "ROOT_KEY_INVALID"
    # what was asked for
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    PROCEDURE_NOT_FOUND = "PROCEDURE_NOT_FOUND"
    # the service
    PUBLISH_FAILED = "PUBLISH_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
