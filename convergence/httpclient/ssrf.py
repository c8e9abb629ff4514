"""Refuse outbound calls to internal addresses in production (SSRF guard).

A tenant's pipeline config names URLs; without this guard it could make the service call the metadata
server or internal hosts. Three places enforce it:
- `check_url`, on every URL before it is sent, the first one and every redirect hop: scheme, metadata
  host names, plain http, and literal IP addresses (aiohttp never passes those to a resolver);
- `GuardedResolver`, the resolver of the session's connector: it resolves the name, checks every
  address, and hands aiohttp exactly those addresses, so the connection goes to the checked address
  (no second lookup that DNS rebinding could answer differently);
- the callers, which send with `allow_redirects=False` and check each Location themselves.

Local development and tests talk to stand-in servers on loopback, so the guard is on only in
production, and `outbound_allowed_hosts` lists host names (or IP addresses / CIDR networks) that may
be reached even though they are not public.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from convergence.pipeline.errors import ErrorCode, PermanentStepError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names of cloud metadata servers, refused whatever they resolve to.
METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
})

# Ranges refused besides everything `is_global` already rules out; listed so the refusal does not depend
# on the Python version's special-purpose registry, and so the error can say why.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local (metadata)"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.0.2.0/24", "reserved"), ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "reserved"), ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("::/96", "IPv4-compatible"),
    ("64:ff9b:1::/48", "local NAT64"), ("100::/64", "reserved"), ("2001:db8::/32", "reserved"),
    ("fc00::/7", "private (unique local, metadata)"), ("fe80::/10", "link-local"), ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_REFUSED_NETWORKS = tuple((ipaddress.ip_network(net), why) for net, why in _REFUSED)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(PermanentStepError):
    code = ErrorCode.BLOCKED_ADDRESS


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: mapped (::ffff:a.b.c.d), 6to4, Teredo, NAT64."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal(address: IPAddress) -> str | None:
    """Why this address may not be called, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "scoped IPv6"
        for inner in _embedded_ipv4(address):
            why = refusal(inner)
            if why:
                return f"{why}, embedded in IPv6"
    for network, why in _REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return why
    if address.is_multicast:
        return "multicast"
    if not address.is_global:
        return "non-public"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressGuard:
    def __init__(self, enabled: bool, allowed_hosts: frozenset[str] | list[str] = frozenset()):
        self.enabled = enabled
        names, networks = set(), []
        for entry in allowed_hosts:
            entry = entry.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry)
        self.allowed_hosts = frozenset(names)
        self.allowed_networks = tuple(networks)

    def _host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_hosts

    def _address_allowed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed_networks)

    def check_address(self, host: str, address: IPAddress) -> None:
        if not self.enabled or self._host_allowed(host) or self._address_allowed(address):
            return
        why = refusal(address)
        if why:
            # The address itself stays out of the message: it would map internal DNS for the tenant.
            raise BlockedAddress(f"{host} resolves to a {why} address; refused")

    def check_url(self, url: str) -> None:
        """Everything that can be checked without DNS: run on every URL and every redirect hop."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise BlockedAddress("the URL cannot be parsed; refused") from None
        if parts.scheme not in ("http", "https"):
            raise BlockedAddress(f"only http(s) URLs may be called, not {parts.scheme!r}")
        if not host:
            raise BlockedAddress("the URL has no host; refused")
        if not self.enabled:
            return
        literal = _literal(host)
        if self._host_allowed(host) or (literal is not None and self._address_allowed(literal)):
            return
        if host.rstrip(".") in METADATA_HOSTS:
            raise BlockedAddress(f"{host} is a metadata server; refused")
        if parts.scheme != "https":
            raise BlockedAddress(f"plain http to {host} is refused in production")
        if literal is not None:
            self.check_address(host, literal)

    async def check(self, url: str) -> None:
        """check_url plus a lookup now: an early, clear refusal. The connector checks again when it connects."""
        self.check_url(url)
        if not self.enabled:
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        if _literal(host) is not None or self._host_allowed(host):
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return  # the connection will fail with a network error, which is retried
        for info in infos:
            self.check_address(host, ipaddress.ip_address(info[4][0]))

    def resolver(self, base: AbstractResolver | None = None) -> GuardedResolver:
        return GuardedResolver(self, base)

    def session(self, *, base_resolver: AbstractResolver | None = None, connector_options: dict[str, Any] | None = None,
                **options: Any) -> aiohttp.ClientSession:
        """A session whose connector only connects to addresses this guard accepted. `base_resolver` does
        the lookups (aiohttp's default resolver unless a test supplies one)."""
        connector = aiohttp.TCPConnector(resolver=self.resolver(base_resolver), **(connector_options or {}))
        return aiohttp.ClientSession(connector=connector, **options)


class GuardedResolver(AbstractResolver):
    """Resolves with `base` (aiohttp's default resolver) and refuses the host if any answer is refused.

    aiohttp connects to the addresses this returns, so what was checked is what is reached."""

    def __init__(self, guard: AddressGuard, base: AbstractResolver | None = None):
        self.guard = guard
        self.base = base or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        if self.guard.enabled and host.lower().rstrip(".") in METADATA_HOSTS and not self.guard._host_allowed(host):
            raise BlockedAddress(f"{host} is a metadata server; refused")
        answers = await self.base.resolve(host, port, family)
        for answer in answers:
            self.guard.check_address(host, ipaddress.ip_address(answer["host"]))
        return answers

    async def close(self) -> None:
        await self.base.close()


def is_guarded(session: aiohttp.ClientSession) -> bool:
    return isinstance(getattr(session.connector, "_resolver", None), GuardedResolver)
