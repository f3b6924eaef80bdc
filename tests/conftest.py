"""Fixtures: the shipped policy, a fake clock, and a guarded demo app per test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from support import CHROME, RULES, FakeClock, FakeResolver, Visitor

from guard import pacing
from guard.demo.app import create_app
from guard.identity.rdns import ReverseDNSVerifier
from guard.policy.rules import Policy, load_rules


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _pace_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped rules pace audio in real time, and these tests run on fake clocks: a pacer's
    waits are computed and counted but not slept, unless the test gives its pacer a real sleep
    (tests/test_pacing.py, tests/test_chromium.py)."""
    monkeypatch.setattr(pacing, "default_sleep", _no_wait)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_rules(RULES)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guarded(clock: FakeClock, policy: Policy) -> Callable[..., Visitor]:
    """A fresh guarded demo app on the memory store; returns a factory of visitors."""
    app = create_app(policy, clock=clock, reverse_dns=ReverseDNSVerifier(FakeResolver()))

    def visitor(ip: str = "198.51.100.7", user_agent: str | None = CHROME) -> Visitor:
        return Visitor(app, ip, user_agent)

    visitor.app = app  # type: ignore[attr-defined]
    return visitor


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server of the tests' own on a free port (never the machine's shared one)."""
    from guard.testing import RedisServer

    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The test Redis, emptied before each test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def one_loop():
    """``run`` for a test whose calls must share one event loop: a Redis connection belongs
    to the loop that opened it, and on a new loop for each call the store would quietly
    count locally (a module patches its own ``run`` with this)."""
    runner = asyncio.Runner()
    yield runner.run
    runner.close()


@pytest.fixture(params=["memory", "redis"])
def make_store(request, one_loop):
    """Makes stores of each kind in turn; a Redis one must have reached Redis on every call."""
    from guard.stores.memory import MemoryStore
    from guard.stores.redis import RedisStore

    made: list[RedisStore] = []

    def make():
        if request.param == "memory":
            return MemoryStore()
        store = RedisStore.from_url(request.getfixturevalue("redis_url"), timeout=2.0)
        made.append(store)
        return store

    yield make
    for store in made:
        one_loop(store.close())
        assert store.stats.fallbacks == 0  # every call reached Redis
