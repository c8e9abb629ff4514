"""Signed run requests (optional): anyone allowed to publish to the requests topic could otherwise run any
org's pipelines. With REQUIRE_SIGNED_REQUESTS, the consumer refuses a request whose body is not signed with
one of REQUEST_SIGNING_KEYS (HMAC-SHA256; on Cloud Run the keys come from Secret Manager as an environment
variable). The first key signs, every key verifies, so a key is rotated by adding the new one first.

The signature covers the body only: the attributes that matter (org_slug, pipeline, run_id) must agree
with the body (ATTRIBUTE_MISMATCH otherwise). A signed message replayed as is runs once, like any
redelivery: the run_id is in the signed body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from convergence.schemas.errors import MessageRejected, RejectCode

SIGNATURE_ATTRIBUTE = "signature"
_SCHEME = "v1="


def sign(body: bytes, key: bytes) -> str:
    return _SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, attributes: Mapping[str, str], keys: Sequence[bytes]) -> None:
    """Raises MessageRejected(SIGNATURE_INVALID) unless one of `keys` signed `body`."""
    given = attributes.get(SIGNATURE_ATTRIBUTE)
    if not given:
        raise MessageRejected(RejectCode.SIGNATURE_INVALID, "the run request is not signed; signed requests "
                                                            "are required")
    if not given.startswith(_SCHEME) or not any(hmac.compare_digest(given, sign(body, key)) for key in keys):
        raise MessageRejected(RejectCode.SIGNATURE_INVALID, "the run request's signature does not match its body")
