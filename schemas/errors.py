"""Why a message was refused. The consumer acks such messages and records REJECTED with the code."""

from __future__ import annotations

from enum import StrEnum

# The reserved org slug that rejections are filed under when their org cannot be trusted: the body could
# not be read or contradicts its attributes (an attribute alone names no org), or the org does not exist.
# The run log files rows with an invalid slug here too. No org may be onboarded under it.
UNKNOWN_ORG = "__unknown"


class RejectCode(StrEnum):
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    MALFORMED_JSON = "MALFORMED_JSON"  # not UTF-8, not JSON, duplicate keys, NaN/Infinity
    SCHEMA_INVALID = "SCHEMA_INVALID"
    UNSUPPORTED_SCHEMA_VERSION = "UNSUPPORTED_SCHEMA_VERSION"
    INVALID_PIPELINE_PATH = "INVALID_PIPELINE_PATH"
    ATTRIBUTE_MISMATCH = "ATTRIBUTE_MISMATCH"  # an attribute contradicts the body
    SIGNATURE_INVALID = "SIGNATURE_INVALID"  # signed requests required: unsigned or badly signed


class MessageRejected(ValueError):
    """A message that can never succeed: never retried. The message is short and safe to log."""

    def __init__(self, code: RejectCode | str, message: str) -> None:
        super().__init__(message)  # str(error) is the message alone: callers log the code separately
        self.code = RejectCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"MessageRejected({self.code.value!r}, {self.message!r})"
