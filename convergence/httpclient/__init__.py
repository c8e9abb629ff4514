"""Outbound HTTP for processors: one retrying JSON client (aiohttp + tenacity) with an SSRF guard."""

from convergence.httpclient.client import HttpClient, HttpError, RetryPolicy
from convergence.httpclient.ssrf import AddressGuard, BlockedAddress

__all__ = ["AddressGuard", "BlockedAddress", "HttpClient", "HttpError", "RetryPolicy"]
