"""Who is the client: the socket peer, or what a trusted proxy says the client is.

Forwarded headers are only believed when the socket peer is one of the configured
trusted proxies. X-Forwarded-For is then walked from the right, skipping trusted proxies;
the first address that is not one is the client. Anything malformed on that walk means
the header cannot be trusted and the peer is used instead. Nothing here raises.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from guard.lru import LRU

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: A proxy chain longer than this is treated as malformed (and costs nothing to reject).
MAX_FORWARDED_HOPS = 32


@dataclass(frozen=True, slots=True)
class Client:
    """A client address and the subnet it is counted with."""

    ip: str
    subnet: str
    address: IPAddress | None = None


UNKNOWN_CLIENT = Client("unknown", "unknown", None)


def parse_ip(text: str) -> IPAddress | None:
    """An address from ``text``, tolerating ports and brackets; IPv4-mapped IPv6 becomes IPv4."""
    text = text.strip().strip('"')
    if not text or len(text) > 64:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientResolver:
    """Resolves the client of an ASGI HTTP scope."""

    def __init__(
        self,
        trusted_proxies: Iterable[str | IPNetwork] = (),
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 64,
    ) -> None:
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._cache: LRU[str, Client] = LRU(65536)

    def resolve(self, scope: dict) -> Client:
        """The client of ``scope`` (an ASGI HTTP scope)."""
        peer = scope.get("client")
        host = peer[0] if peer else None
        if not isinstance(host, str):
            return UNKNOWN_CLIENT
        client = self._cache.get(host)
        if client is None:
            client = self._client(parse_ip(host), host)
            self._cache.put(host, client)
        if not self.trusted or client.address is None or not self.is_trusted(client.address):
            return client
        forwarded = _header_values(scope.get("headers", ()), b"x-forwarded-for")
        if not forwarded:
            return client
        address = self._walk(forwarded)
        return self._client(address, str(address)) if address is not None else client

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return any(address in net for net in self.trusted if net.version == address.version)

    def subnet_of(self, address: IPAddress) -> str:
        """The subnet ``address`` is counted with, e.g. ``203.0.113.0/24``."""
        prefix = self.ipv4_prefix if address.version == 4 else self.ipv6_prefix
        return str(ipaddress.ip_network((address, prefix), strict=False))

    def _client(self, address: IPAddress | None, fallback: str) -> Client:
        if address is None:
            # Not an IP (a unix socket path, a test client name): count it under its own name.
            name = fallback[:64]
            return Client(name, name, None)
        return Client(str(address), self.subnet_of(address), address)

    def _walk(self, values: list[str]) -> IPAddress | None:
        entries = [e for v in values for e in v.split(",")]
        if len(entries) > MAX_FORWARDED_HOPS:
            return None
        address: IPAddress | None = None
        for entry in reversed(entries):
            address = parse_ip(entry)
            if address is None:
                return None
            if not self.is_trusted(address):
                return address
        return address  # every hop is a trusted proxy: the left-most is the client


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key.lower() == name]
