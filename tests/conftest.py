"""Fixtures: the shipped policy, a fake clock, and a guarded demo app per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import CHROME, RULES, FakeClock, FakeResolver, Visitor

from guard.demo.app import create_app
from guard.identity.rdns import ReverseDNSVerifier
from guard.policy.rules import Policy, load_rules


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
