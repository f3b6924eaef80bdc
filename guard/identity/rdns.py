"""Forward-confirmed reverse DNS for crawlers whose operators publish only hostnames.

Yandex, Baidu and others say: look up the address's PTR name, check that it ends in
one of our domains, then resolve that name and check it points back at the address.
DNS is far too slow for the request path, so a lookup never waits: the first request
from an address starts a background check and is judged by the configured *pending*
policy; later requests use the cached answer (positive and negative answers each
expire). The default resolver runs the system resolver in a worker thread, so the
event loop never blocks; tests inject their own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

from guard.identity.address import Client, parse_ip
from guard.identity.catalogue import Agent
from guard.lru import LRU

log = logging.getLogger("guard.rdns")


class Resolver(Protocol):
    """The two DNS questions forward-confirmed reverse DNS asks."""

    async def reverse(self, ip: str) -> str | None:
        """The PTR name of ``ip``, or None."""
        ...

    async def forward(self, host: str) -> list[str]:
        """The addresses ``host`` resolves to."""
        ...


class SystemResolver:
    """The operating system's resolver, called in the event loop's worker threads."""

    async def reverse(self, ip: str) -> str | None:
        loop = asyncio.get_running_loop()
        try:
            host, _ = await loop.getnameinfo((ip, 0), socket.NI_NAMEREQD)
        except OSError:
            return None
        return host

    async def forward(self, host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return []
        return [str(info[4][0]) for info in infos]


class ReverseDNSVerifier:
    """Cached, non-blocking forward-confirmed reverse DNS checks."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        ttl: float = 3600.0,
        negative_ttl: float = 600.0,
        timeout: float = 2.0,
        max_entries: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver or SystemResolver()
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self.clock = clock
        self._answers: LRU[tuple[str, str], tuple[bool, float]] = LRU(max_entries)
        self._pending: dict[tuple[str, str], asyncio.Task] = {}

    def verify(self, agent: Agent, client: Client) -> bool | None:
        """True/False from the cache, or None while a check is pending (one is started)."""
        suffixes = agent.verification.rdns_suffixes if agent.verification else ()
        if not suffixes or client.version == 0:
            return None
        key = (agent.name, client.ip)
        answer = self._answers.get(key)
        if answer is not None and answer[1] > self.clock():
            return answer[0]
        if key not in self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None  # no event loop (a command-line check): nothing to run it on
            task = loop.create_task(self._check(key, client.ip, suffixes))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return None

    async def check(self, agent: Agent, client: Client) -> bool | None:
        """Run (or join) the check now and return its answer; for tools and tests."""
        if self.verify(agent, client) is None and (agent.name, client.ip) in self._pending:
            await asyncio.shield(self._pending[(agent.name, client.ip)])
        return self.verify(agent, client)

    async def _check(self, key: tuple[str, str], ip: str, suffixes: tuple[str, ...]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                ok = await self._confirmed(ip, suffixes)
        except Exception as exc:  # DNS trouble: no answer to cache, try again next time
            log.info("guard: reverse DNS check of %s failed: %s", ip, exc)
            return
        self._answers.put(key, (ok, self.clock() + (self.ttl if ok else self.negative_ttl)))

    async def _confirmed(self, ip: str, suffixes: tuple[str, ...]) -> bool:
        host = await self.resolver.reverse(ip)
        if not host:
            return False
        host = host.rstrip(".").lower()
        if not any(host == s or host.endswith("." + s) for s in suffixes):
            return False
        wanted = parse_ip(ip)
        return any(parse_ip(address) == wanted for address in await self.resolver.forward(host))
