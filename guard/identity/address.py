"""Who is the client: the socket peer, or what a trusted proxy says the client is.

Forwarded headers are only believed when the socket peer is one of the configured
trusted proxies, and only the one header those proxies write (``forwarded_header``:
``x-forwarded-for`` by default, ``forwarded`` for RFC 7239, or ``x-real-ip``); every other
forwarding header is ignored, whoever sent it. Several lines of that header are joined in
order. The chain is walked from the right over trusted proxies only: the first entry that
is not one is the client, and nothing to its left is read at all (a client may write any
junk there; its proxy appends the real address after it). If that entry is no usable
address (``unknown``, ``_obfuscated``, a name, junk, or more than 32 trusted hops), the
request is not attributed to the proxy: it goes to one strict shared bucket for
unidentifiable clients behind that proxy (see :attr:`Client.via`), logged once per change
of state. A trusted peer sending no such header is itself the client (health checks).
Nothing here raises.

An IPv6 client is keyed by its /64 by default (``clients.ipv6`` in the rules): one
household or host usually holds a whole /64 and can rotate through it at will.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Protocol

from guard.headers import request_headers
from guard.lru import LRU, SizedLRU

log = logging.getLogger("guard")

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: More trusted hops than this in a row is a malformed chain.
MAX_FORWARDED_HOPS = 32
#: The headers a trusted proxy may be configured to write (the rules' ``clients.forwarded``).
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_FAMILY = {4: (socket.AF_INET, 4, 32), 6: (socket.AF_INET6, 16, 128)}


@dataclass(frozen=True, slots=True)
class Client:
    """A client address (canonical text and number), the key it is counted under
    (the address, or its /64 for IPv6) and the subnet it is aggregated with.

    ``via`` is set for the shared bucket of clients a trusted proxy forwarded without a
    usable address: all of them count as one client, whatever their User-Agent.
    ``source`` is the forwarded header the address was read from ("": the socket peer).

    ``networks`` are its wider networks as ``(prefix length, network)`` for the levels
    the rules count (e.g. its /16, or its /48 and /32); ``tag`` is the widest of them, the
    hash tag all of the request's Redis keys share; ``provider`` is the hosting provider
    whose published ranges hold the address (None: not a known data centre).
    """

    ip: str
    subnet: str
    version: int = 0  # 4 or 6; 0 when the peer is not an IP address
    number: int = 0
    key: str = ""
    via: str = ""
    networks: tuple[tuple[int, str], ...] = ()
    tag: str = ""
    provider: str | None = None
    source: str = ""
    fingerprint: str | None = None  # a rare TLS fingerprint from the edge (guard.fingerprints), else None

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.ip)
        if not self.tag:
            object.__setattr__(self, "tag", self.subnet)

    def network(self, prefix: int) -> str | None:
        """The client's network at ``prefix`` bits, if that level is counted."""
        for length, network in self.networks:
            if length == prefix:
                return network
        return None

    @property
    def address(self) -> IPAddress | None:
        """The address as an :mod:`ipaddress` object (None when not an IP)."""
        if self.version == 4:
            return IPv4Address(self.number)
        if self.version == 6:
            return IPv6Address(self.number)
        return None


UNKNOWN_CLIENT = Client("unknown", "unknown")


class HostingLookup(Protocol):
    """Which hosting provider's published ranges hold an address (see guard.identity.ranges)."""

    def provider(self, version: int, number: int) -> str | None: ...


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(version, number)`` of an address in ``text``, or None.

    Tolerates surrounding blanks and quotes, ``[v6]``, ``[v6]:port``, ``v4:port`` and an
    IPv6 zone (``fe80::1%eth0``, dropped). Only canonical dotted quads are IPv4 (``127.1``,
    ``0x7f.0.0.1``, ``010.0.0.1`` are rejected). IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is IPv4.
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
    if "%" in text:
        text = text.split("%", 1)[0]
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
        forwarded_header: str = "x-forwarded-for",
        levels: dict[int, tuple[int, ...]] | None = None,
        hosting: HostingLookup | None = None,
        provider_tag: bool = False,
    ) -> None:
        if forwarded_header not in FORWARDED_HEADERS:
            raise ValueError(f"forwarded_header is one of {', '.join(FORWARDED_HEADERS)}, not {forwarded_header!r}")
        self.trusted = Networks(trusted_proxies)
        self.prefix = {4: ipv4_prefix, 6: ipv6_prefix}
        # Wider networks counted per family, narrowest first (the subnet is the first level).
        self.levels = {v: tuple(sorted({self.prefix[v], *(levels or {}).get(v, ())}, reverse=True)) for v in (4, 6)}
        self.hosting = hosting
        # Counting per provider puts each provider's whole range under one tag (one slot).
        self.provider_tag = provider_tag
        self.client_prefix = {4: client_prefix[0], 6: client_prefix[1]}
        self.forwarded_header = forwarded_header
        self._header = forwarded_header.encode("latin-1")
        self._peers: LRU[str, tuple[Client, bool]] = LRU(65536)  # the peer, and whether it is a trusted proxy
        # False: no usable client. Bounded in bytes too: a chain is up to 512 bytes (below).
        self._forwarded: SizedLRU[bytes, Client | bool] = SizedLRU(65536, 8 << 20, overhead=200)
        self._garbling: set[str] = set()  # proxies whose last forwarded header named no usable client
        #: Times a trusted proxy started (or stopped) sending chains without a usable client.
        self.unidentified_changes = 0

    def resolve(self, scope: Mapping[str, Any], headers: Mapping[bytes, bytes] | None = None) -> Client:
        """The client of ``scope`` (an ASGI HTTP scope).

        ``headers``: the scope's headers as :func:`guard.headers.request_headers` reads them,
        when the caller already has them (else they are read here)."""
        peer = scope.get("client")
        host = peer[0] if peer else None
        if not isinstance(host, str):
            return UNKNOWN_CLIENT
        known = self._peers.peek(host)  # not refreshed: a peer pushed out is only parsed again
        if known is None:
            client = self.client(parse_ip(host), host)
            known = (client, bool(self.trusted) and self.trusted.contains(client.version, client.number))
            self._peers.put(host, known)
        client, trusted = known
        if not trusted:
            return client
        if headers is None:
            headers = request_headers(scope)
        chain = headers.get(self._header)
        if chain is None:
            return client  # the proxy's own request
        # Keyed on the header's bytes as sent (a chain names the same client whichever
        # trusted proxy passed it on): a returning client costs one lookup, no decoding.
        cacheable = len(chain) <= 512  # a long chain is walked each time instead of filling the cache
        found = self._forwarded.get(chain) if cacheable else None
        if found is None:
            parsed = self._walk(chain.decode("latin-1"))
            found = self.client(parsed, "", self.forwarded_header) if parsed is not None else False
            if cacheable:
                self._forwarded.put(chain, found)
        if not isinstance(found, Client):
            return self._unidentified(client)
        if self._garbling and client.ip in self._garbling:
            self._garbling.discard(client.ip)
            self.unidentified_changes += 1
            log.warning("guard: trusted proxy %s sends usable client addresses again", client.ip)
        return found

    def client(self, parsed: tuple[int, int] | None, fallback: str, source: str = "") -> Client:
        """A :class:`Client` for a parsed address; a non-IP peer is counted under its own name.

        ``source``: the forwarded header the address came from ("": the socket peer)."""
        if parsed is None:
            name = fallback[:64] or "unknown"
            return Client(name, name)
        version, number = parsed
        ip = format_ip(version, number)
        networks = tuple((p, self._network(version, number, p)) for p in self.levels[version])
        provider = self.hosting.provider(version, number) if self.hosting is not None else None
        return Client(
            ip,
            self._network(version, number, self.prefix[version]),
            version,
            number,
            self._network(version, number, self.client_prefix[version], ip),
            networks=networks,
            # The widest level counted: all of a request's Redis keys share this hash tag (one slot).
            tag=f"hosting:{provider}" if provider and self.provider_tag else networks[-1][1],
            provider=provider,
            source=source,
        )

    def _unidentified(self, proxy: Client) -> Client:
        """The shared bucket of requests whose forwarded chain from ``proxy`` names no usable client."""
        if proxy.ip not in self._garbling and len(self._garbling) < 1024:
            self._garbling.add(proxy.ip)
            self.unidentified_changes += 1
            log.warning(
                "guard: trusted proxy %s sent a %s header without a usable client address; such requests "
                "share one strict bucket until it sends usable ones",
                proxy.ip,
                self.forwarded_header,
            )
        name = f"unidentified-via-{proxy.ip}"
        return Client("unidentified", name, key=name, via=proxy.ip, source=self.forwarded_header)

    @staticmethod
    def _network(version: int, number: int, prefix: int, whole: str | None = None) -> str:
        bits = _FAMILY[version][2]
        if prefix >= bits and whole is not None:
            return whole
        network = number >> (bits - prefix) << (bits - prefix)
        return f"{format_ip(version, network)}/{prefix}"

    def _walk(self, text: str) -> tuple[int, int] | None:
        """The client in a forwarded chain: walked from the right over trusted proxies only.

        None when the first entry that is not a trusted proxy is no usable address, or
        after more than :data:`MAX_FORWARDED_HOPS` trusted hops. Entries left of the
        client are never looked at.
        """
        rfc7239 = self.forwarded_header == "forwarded"
        end, hops = len(text), 0
        parsed: tuple[int, int] | None = None
        while end >= 0:
            start = text.rfind(",", 0, end)
            entry = text[start + 1 : end]
            end = start if start >= 0 else -1
            if not entry.strip():
                continue  # an empty element (a stray comma): nothing to read
            value = _forwarded_for(entry) if rfc7239 else entry
            parsed = parse_ip(value) if value is not None else None
            if parsed is None:
                return None
            if not self.trusted.contains(*parsed):
                return parsed
            hops += 1
            if hops > MAX_FORWARDED_HOPS:
                return None
        return parsed  # every hop is a trusted proxy: the left-most is the client


def _forwarded_for(element: str) -> str | None:
    """The ``for=`` value of one RFC 7239 forwarded-element, unquoted (None if absent)."""
    for pair in element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.strip().lower() == "for":
            return value.strip().strip('"')
    return None
