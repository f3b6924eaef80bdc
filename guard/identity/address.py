"""Who is the client: the socket peer, or what a trusted proxy says the client is.

Forwarded headers are only believed when the socket peer is one of the configured
trusted proxies. The RFC 7239 ``Forwarded`` header (its ``for=`` elements) or else
X-Forwarded-For is then walked from the right, skipping trusted proxies; the first
address that is not one is the client. Anything malformed on that walk (a name, an
obfuscated identifier, ``unknown``, junk) means the header cannot be trusted and the
peer is used instead. Nothing here raises.

An IPv6 client is keyed by its /64 by default (``clients.ipv6`` in the rules): one
household or host usually holds a whole /64 and can rotate through it at will.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from guard.lru import LRU

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: A proxy chain longer than this is treated as malformed (and costs nothing to reject).
MAX_FORWARDED_HOPS = 32
_FAMILY = {4: (socket.AF_INET, 4, 32), 6: (socket.AF_INET6, 16, 128)}


@dataclass(frozen=True, slots=True)
class Client:
    """A client address (canonical text and number), the key it is counted under
    (the address, or its /64 for IPv6) and the subnet it is aggregated with."""

    ip: str
    subnet: str
    version: int = 0  # 4 or 6; 0 when the peer is not an IP address
    number: int = 0
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.ip)

    @property
    def address(self) -> IPAddress | None:
        """The address as an :mod:`ipaddress` object (None when not an IP)."""
        if self.version == 4:
            return IPv4Address(self.number)
        if self.version == 6:
            return IPv6Address(self.number)
        return None


UNKNOWN_CLIENT = Client("unknown", "unknown")


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(version, number)`` of an address in ``text``, or None.

    Tolerates surrounding blanks and quotes, ``[v6]``, ``[v6]:port`` and ``v4:port``. Only
    canonical dotted quads are IPv4 (``127.1``, ``0x7f.0.0.1``, ``010.0.0.1`` are rejected).
    IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is IPv4.
    """
    text = text.strip().strip('"')
    if not text or len(text) > 64:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        pass
    try:
        number = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, ValueError):
        return None
    if number >> 32 == 0xFFFF:
        return 4, number & 0xFFFFFFFF
    return 6, number


def format_ip(version: int, number: int) -> str:
    """Canonical text of an address (RFC 5952 compressed for IPv6)."""
    family, size, _ = _FAMILY[version]
    return socket.inet_ntop(family, number.to_bytes(size, "big"))


class Networks:
    """A small set of CIDRs with integer membership tests (trusted proxies, metrics readers)."""

    def __init__(self, cidrs: Iterable[str | IPNetwork] = ()) -> None:
        networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.networks = tuple(networks)
        self._ints = tuple((n.version, int(n.network_address), int(n.netmask)) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._ints)

    def contains(self, version: int, number: int) -> bool:
        """Whether the address ``number`` of IP ``version`` is in one of the networks."""
        return any(version == v and number & mask == net for v, net, mask in self._ints)

    def contains_text(self, text: str) -> bool:
        """Whether the address written as ``text`` is in one of the networks (False if not an address)."""
        parsed = parse_ip(text)
        return parsed is not None and self.contains(*parsed)


class ClientResolver:
    """Resolves the client of an ASGI HTTP scope."""

    def __init__(
        self,
        trusted_proxies: Iterable[str | IPNetwork] = (),
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 64,
        client_prefix: tuple[int, int] = (32, 64),
    ) -> None:
        self.trusted = Networks(trusted_proxies)
        self.prefix = {4: ipv4_prefix, 6: ipv6_prefix}
        self.client_prefix = {4: client_prefix[0], 6: client_prefix[1]}
        self._peers: LRU[str, Client] = LRU(65536)
        self._forwarded: LRU[str, Client | bool] = LRU(65536)

    def resolve(self, scope: Mapping[str, Any]) -> Client:
        """The client of ``scope`` (an ASGI HTTP scope)."""
        peer = scope.get("client")
        host = peer[0] if peer else None
        if not isinstance(host, str):
            return UNKNOWN_CLIENT
        client = self._peers.get(host)
        if client is None:
            client = self.client(parse_ip(host), host)
            self._peers.put(host, client)
        if not self.trusted or not self.trusted.contains(client.version, client.number):
            return client
        forwarded, legacy = [], []
        for key, value in scope.get("headers", ()):
            if key == b"forwarded":
                forwarded.append(value.decode("latin-1"))
            elif key == b"x-forwarded-for":
                legacy.append(value.decode("latin-1"))
        if forwarded:
            header = "F:" + ",".join(forwarded)
        elif legacy:
            header = "X:" + ",".join(legacy)
        else:
            return client
        found = self._forwarded.get(header)
        if found is None:
            parsed = self._walk(header)
            found = self.client(parsed, "") if parsed is not None else False
            self._forwarded.put(header, found)
        return found if isinstance(found, Client) else client

    def client(self, parsed: tuple[int, int] | None, fallback: str) -> Client:
        """A :class:`Client` for a parsed address; a non-IP peer is counted under its own name."""
        if parsed is None:
            name = fallback[:64] or "unknown"
            return Client(name, name)
        version, number = parsed
        ip = format_ip(version, number)
        return Client(
            ip,
            self._network(version, number, self.prefix[version]),
            version,
            number,
            self._network(version, number, self.client_prefix[version], ip),
        )

    @staticmethod
    def _network(version: int, number: int, prefix: int, whole: str | None = None) -> str:
        bits = _FAMILY[version][2]
        if prefix >= bits and whole is not None:
            return whole
        network = number >> (bits - prefix) << (bits - prefix)
        return f"{format_ip(version, network)}/{prefix}"

    def _walk(self, header: str) -> tuple[int, int] | None:
        kind, text = header[:2], header[2:]
        entries = text.split(",", MAX_FORWARDED_HOPS + 1)
        if len(entries) > MAX_FORWARDED_HOPS:
            return None
        parsed: tuple[int, int] | None = None
        for entry in reversed(entries):
            if kind == "F:":
                named = _forwarded_for(entry)
                if named is None:
                    return None
                entry = named
            parsed = parse_ip(entry)
            if parsed is None:
                return None
            if not self.trusted.contains(*parsed):
                return parsed
        return parsed  # every hop is a trusted proxy: the left-most is the client


def _forwarded_for(element: str) -> str | None:
    """The ``for=`` value of one RFC 7239 forwarded-element, unquoted (None if absent)."""
    for pair in element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.strip().lower() == "for":
            return value.strip().strip('"')
    return None
