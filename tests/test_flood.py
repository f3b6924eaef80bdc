"""A scraper floods the store to flush the budgets that limit it: the flood gains nothing.

Each test runs the same scraper twice against the shipped rules, once with a flood in the
middle of its day and once without, and compares the tracks it is served. The memory store
is small (a few thousand entries) so that a flood of a few thousand requests overfills it;
the Redis one runs with ``maxmemory`` and the eviction policy docs/redis.md asks for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from support import CHROME, RULES, FakeClock

from guard.policy.engine import Guard
from guard.policy.rules import load_rules
from guard.sessions.tokens import Session
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore, eviction_problem
from guard.testing import RedisServer

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight
ADDRESS = "198.51.100.7"
FLOOD = 3000  # requests; the memory store below holds 2,000 entries


def proven(sid: str) -> Session:
    return Session(sid, T0 - 60, state="page", proven_until=T0 + 3 * 86400, platform="windows")


class Scraper:
    """One scraper's requests to a guard with the shipped rules (an injected clock)."""

    def __init__(self, store) -> None:
        self.clock = FakeClock(T0)
        self.guard = Guard(load_rules(RULES), store, clock=self.clock)
        self.store = store
        self.track = 0

    async def fetch(self, path: str, ip: str = ADDRESS, ua: str = CHROME, session: Session | None = None) -> bool:
        client = self.guard.resolver.resolve({"client": (ip, 1), "headers": []})
        return (await self.guard.decide(self.guard.facts(client, ua, path, session=session))).allowed

    async def listen(self, sid: str = "scraper", ua: str = CHROME) -> bool:
        """A new track's audio, 36 s after the last (100 an hour: under every minute and hour limit)."""
        self.track += 1
        self.clock.advance(36)
        return await self.fetch(f"/tracks/{self.track}/stream", ua=ua, session=proven(sid))

    async def flood(self, kind: str) -> None:
        """``FLOOD`` requests at 90 a second that each stay under every limit."""
        for n in range(FLOOD):
            self.clock.advance(1 / 90)
            ua = f"{CHROME} flood/{n}"
            if kind == "user-agents":  # page loads from the scraper's address, a new User-Agent each
                await self.fetch(f"/tracks/{n % 20 + 1}", ua=ua)
            elif kind == "subnet":  # the same from the other addresses of its /24
                await self.fetch(f"/tracks/{n % 20 + 1}", ip=f"198.51.100.{n % 250 + 10}", ua=ua)
            elif kind == "botnet":  # addresses everywhere, page loads and audio with a new session each
                ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
                await self.fetch(f"/tracks/{n % 20 + 1}", ip=ip, ua=ua)
                await self.fetch(f"/tracks/{n % 20 + 1}/stream", ip=ip, ua=ua, session=proven(f"flood{n}"))
            else:  # new sessions on the scraper's own address, audio (they are refused at 200 a day)
                await self.fetch(f"/tracks/{n % 20 + 1}/stream", ua=ua, session=proven(f"flood{n}"))


FLOODS = ["user-agents", "subnet", "botnet", "sessions"]


@pytest.fixture(params=["memory", "redis"])
def small_store(request) -> Iterator[Callable[[], object]]:
    """Makes small stores: a memory store of 2,000 entries, or a Redis with 3 MB and volatile-ttl."""
    servers: list[RedisServer] = []
    runner = asyncio.Runner()

    def make():
        if request.param == "memory":
            return MemoryStore(max_entries=2000)
        server = RedisServer("--maxmemory", "3mb", "--maxmemory-policy", "volatile-ttl").start()
        servers.append(server)
        return RedisStore.from_url(server.url, timeout=5.0)

    make.run = runner.run  # type: ignore[attr-defined]
    yield make
    runner.close()
    for server in servers:
        server.stop()


async def one_session(store, flood: str | None) -> int:
    """One session stops at 280 tracks of the day, floods (or not), and asks for 40 more."""
    scraper = Scraper(store)
    served = sum([await scraper.listen() for _ in range(280)])
    if flood:
        await scraper.flood(flood)
    served += sum([await scraper.listen() for _ in range(40)])
    if isinstance(store, RedisStore):
        assert store.stats.fallbacks == 0  # every call reached Redis (none refused for memory)
    return served


@pytest.mark.parametrize("flood", FLOODS)
def test_a_flood_does_not_give_one_session_more_of_its_day(request, small_store, flood) -> None:
    if flood == "botnet" and "redis" in request.node.name:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="volatile-ttl evicts by time to live, not by what a key counts: a botnet's new day "
                "budgets outlive a scraper's older slices (docs/redis.md: noeviction with headroom)",
            )
        )
    run = small_store.run
    without = run(one_session(small_store(), None))
    assert 280 <= without <= 293  # session-day: 290 (and the counting's ~1% error)
    assert run(one_session(small_store(), flood)) <= without


async def thirty_sessions(store, flood: str | None) -> int:
    """Thirty sessions (thirty browsers) on one address past its day (8,000): a flood each 2,000 tracks."""
    scraper = Scraper(store)
    served = 0
    for n in range(8400):
        if flood and n % 2000 == 1999:
            await scraper.flood(flood)
        scraper.clock.advance(-35)  # thirty at once: 30 tracks a minute from the address
        served += await scraper.listen(f"s{n % 30}", f"{CHROME} browser/{n % 30}")
    return served


def test_a_flood_does_not_give_an_address_more_of_its_day() -> None:
    runner = asyncio.Runner()
    try:
        without = runner.run(thirty_sessions(MemoryStore(max_entries=2000), None))
        assert 7900 <= without <= 8100  # address-day: 8,000
        assert runner.run(thirty_sessions(MemoryStore(max_entries=2000), "user-agents")) <= without
    finally:
        runner.close()


# -- Redis's own eviction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "maxmemory", "problem"),
    [
        ("noeviction", "3mb", False),
        ("volatile-ttl", "3mb", False),
        ("allkeys-lru", "0", False),  # no limit: nothing is ever evicted
        ("allkeys-lru", "3mb", True),
        ("allkeys-lfu", "3mb", True),
        ("volatile-lru", "3mb", True),
        ("volatile-random", "3mb", True),
    ],
)
def test_an_evicting_redis_policy_is_found(policy, maxmemory, problem) -> None:
    server = RedisServer("--maxmemory", maxmemory, "--maxmemory-policy", policy).start()
    try:

        async def read() -> str | None:
            store = RedisStore.from_url(server.url)
            try:
                return await eviction_problem(store.client)
            finally:
                await store.close()

        found = asyncio.run(read())
    finally:
        server.stop()
    assert (found is not None) == problem
    if problem:
        assert policy in found and "volatile-ttl" in found


def test_guard_check_fails_on_a_redis_that_evicts_budgets_and_passes_on_one_that_keeps_them() -> None:
    from test_cli import assert_one_line_error, guard

    for policy, status in (("allkeys-lru", 1), ("volatile-ttl", 0), ("noeviction", 0)):
        server = RedisServer("--maxmemory", "64mb", "--maxmemory-policy", policy).start()
        try:
            result = guard("check", str(RULES), "--redis-url", server.url)
        finally:
            server.stop()
        if status:
            assert_one_line_error(result, 1, "allkeys-lru", "volatile-ttl", "docs/redis.md")
        else:
            assert result.returncode == 0 and "keeps live budgets" in result.stdout, result.stderr


def test_the_redis_store_warns_at_start_up_when_it_would_evict_budgets(caplog) -> None:
    from support import Visitor

    from guard.demo.app import create_app

    server = RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu").start()
    try:

        async def main() -> None:
            app = create_app(RULES, store=RedisStore.from_url(server.url, timeout=2.0), clock=FakeClock(T0))
            await Visitor(app, ADDRESS).get("/tracks/1")  # the first request starts the background tasks
            await app._evicting
            await app.guard.store.close()

        with caplog.at_level("WARNING", logger="guard.redis"):
            asyncio.run(main())
    finally:
        server.stop()
    assert any("allkeys-lfu" in r.getMessage() and "volatile-ttl" in r.getMessage() for r in caplog.records)
