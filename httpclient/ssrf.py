"""Refuse outbound calls to loopback, link-local (metadata) and private addresses in production.

A tenant's pipeline config names URLs; without this guard it could make the service call the metadata
server or internal hosts. Local development and tests talk to stand-in servers on loopback, so the
guard is on only where settings say so, with an allow-list of hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from pipeline.errors import PermanentStepError


class BlockedAddress(PermanentStepError):
    code = "BLOCKED_ADDRESS"


class AddressGuard:
    def __init__(self, enabled: bool, allowed_hosts: frozenset[str] = frozenset()):
        self.enabled = enabled
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BlockedAddress(f"only http(s) URLs may be called, not {parts.scheme!r}")
        if not self.enabled:
            return
        host = (parts.hostname or "").lower()
        if host in self.allowed_hosts:
            return
        if parts.scheme != "https":
            raise BlockedAddress(f"plain http to {host} is refused in production")
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global or address.is_multicast:
                raise BlockedAddress(f"{host} resolves to a non-public address; refused")
