"""A value a client counted lately is not counted again (guard.policy.engine._Prepared).

Budgets skip a repeat within the slice exactly; exact windows of a minute or more lag by at
most a thirtieth of the window; rates and bans are looked at on every request.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Sequence

import pytest
from support import CHROME, FakeClock, run
from test_networks import policy_with

from guard.policy.engine import Guard
from guard.policy.limits import Check, Verdict
from guard.sessions.tokens import Session
from guard.stores.memory import MemoryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight: day slices start on the hour

RULES = """
  - id: session-day
    match: {path: audio}
    limit: {key: session, distinct: track, max: 5, per: 1d}
    action: throttle
  - id: minute
    match: {path: audio}
    limit: {key: ip_ua, distinct: track, max: 3, per: 1m}
    action: throttle
  - id: rate
    match: {path: audio}
    limit: {key: ip_ua, requests: 60, per: 1m, burst: 8}
    action: throttle
"""


class Recording:
    """A store that keeps the checks it was handed (and can yield first, as Redis does)."""

    def __init__(self, store, pause: asyncio.Event | None = None) -> None:
        self.store = store
        self.pause = pause
        self.seen: list[list[Check]] = []

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        self.seen.append(list(checks))
        if self.pause is not None:
            await self.pause.wait()
        return await self.store.apply(now, checks)

    async def peek(self, now, checks):
        return await self.store.peek(now, checks)

    async def close(self) -> None:
        await self.store.close()


class Exact(Guard):
    """A guard that counts every value every time (what the skipping is compared with)."""

    def _checks(self, facts, limits, now_us):
        return super()._checks(facts, limits, None)


def fetch(guard: Guard, track: int, ip: str = "198.51.100.7", session: str = "s1"):
    client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
    facts = guard.facts(client, CHROME, f"/tracks/{track}/stream", session=Session(session, T0, state="page"))
    return run(guard.decide(facts))


@pytest.fixture(autouse=True)
def _one_loop(monkeypatch, one_loop) -> None:
    """Every call of a test on one event loop (see conftest's ``one_loop``)."""
    monkeypatch.setattr(sys.modules[__name__], "run", one_loop)


RULE_IDS = ("session-day", "minute", "rate")


def counted(checks: list[Check]) -> dict[str, str | None]:
    """Rule id -> the value its check counts (None: its ban alone, or no check at all)."""
    items = {c.key.split("}:")[1].split(":")[0]: c.item for c in checks}
    return {rule: items.get(rule) for rule in RULE_IDS}


def sent(checks: list[Check]) -> list[str]:
    """The rules whose checks the store was handed."""
    return [c.key.split("}:")[1].split(":")[0] for c in checks]


def test_a_repeat_counts_only_what_must_be_counted_again(tmp_path, make_store) -> None:
    clock = FakeClock(T0)
    store = Recording(make_store())
    guard = Guard(policy_with(tmp_path, RULES), store, clock=clock)  # type: ignore[arg-type]
    assert fetch(guard, 1).allowed
    first = counted(store.seen[-1])
    assert first["session-day"] and first["minute"] == "1" and first["rate"] is None
    clock.advance(1.9)  # within a thirtieth of the minute: neither counts it again
    assert fetch(guard, 1).allowed
    assert counted(store.seen[-1]) == {"session-day": None, "minute": None, "rate": None}
    # The others have no ban to look up: left out. The canary ban lookup rides along with a call
    # the request makes anyway (alone it would cost none: see the next test).
    assert sent(store.seen[-1]) == ["rate", "canary"]
    clock.advance(0.2)  # 2.1 s: the minute's window counts it again (its sight moves on); the day does not
    assert fetch(guard, 1).allowed
    assert counted(store.seen[-1]) == {"session-day": None, "minute": "1", "rate": None}
    assert fetch(guard, 2).allowed  # another track is counted by both
    assert all(counted(store.seen[-1])[rule] for rule in ("session-day", "minute"))
    clock.advance(3600)  # the next slice of the day: counted again once
    assert fetch(guard, 2).allowed
    assert counted(store.seen[-1])["session-day"] is not None
    assert fetch(guard, 2).allowed
    assert counted(store.seen[-1])["session-day"] is None


def test_budgets_decide_exactly_as_without_skipping(tmp_path, make_store) -> None:
    """Random traffic of repeats and new tracks: the same verdicts, request by request."""
    budgets = RULES.replace("max: 3, per: 1m", "max: 3, per: 1s")  # the minute becomes a short, unskipped window
    rng = random.Random(7)
    clocks = FakeClock(T0), FakeClock(T0)
    skipping = Guard(policy_with(tmp_path, budgets), make_store(), clock=clocks[0])
    exact = Exact(policy_with(tmp_path, budgets), make_store(), clock=clocks[1], namespace="exact")  # its own keys
    for _ in range(400):
        track = rng.choice([1, 2, 3, 4, 5, 6, 7, rng.randint(8, 60)])
        session = rng.choice(["s1", "s1", "s2"])
        got = fetch(skipping, track, session=session), fetch(exact, track, session=session)
        assert (got[0].action, got[0].rule_id) == (got[1].action, got[1].rule_id)
        step = rng.choice([0.05, 0.4, 3.0, 700.0])
        for clock in clocks:
            clock.advance(step)


def test_a_window_repeat_lags_by_a_thirtieth_of_the_window_at_most(tmp_path) -> None:
    one = RULES.replace("max: 3, per: 1m", "max: 1, per: 1m")
    clock = FakeClock(T0)
    guard = Guard(policy_with(tmp_path, one), MemoryStore(), clock=clock)
    assert fetch(guard, 1).allowed
    clock.advance(1.5)
    assert fetch(guard, 1).allowed  # not counted again: track 1 was last seen at 0
    clock.advance(59.0)  # 60.5 s: counted exactly, track 1 (seen at 1.5) would still fill the window
    assert fetch(guard, 2).allowed  # the lag: 1.5 s of the minute, under 2 s
    # Past the lag, a repeat is counted again and keeps the window full.
    guard = Guard(policy_with(tmp_path, one), MemoryStore(), clock=clock)
    assert fetch(guard, 1).allowed
    clock.advance(2.5)
    assert fetch(guard, 1).allowed
    clock.advance(58.0)  # 60.5 s after the first sight, 58 s after the second
    assert not fetch(guard, 2).allowed


def test_repeats_still_meet_the_rate(tmp_path) -> None:
    clock = FakeClock(T0)
    guard = Guard(policy_with(tmp_path, RULES), MemoryStore(), clock=clock)
    served = sum(fetch(guard, 1).allowed for _ in range(20))  # the same track, back to back
    assert served == 8  # the burst


def test_a_ban_set_elsewhere_stops_a_repeat_at_once(tmp_path, make_store) -> None:
    """Two instances share a store: one bans the client, the other must not serve its repeats."""
    banning = RULES.replace(
        "action: throttle\n  - id: rate", "action: throttle\n    ban: {after: 1, within: 1m, for: 1h}\n  - id: rate"
    )
    shared = make_store()
    clock = FakeClock(T0)
    one = Guard(policy_with(tmp_path, banning), shared, clock=clock)
    other = Guard(policy_with(tmp_path, banning), shared, clock=clock)
    assert fetch(one, 1).allowed
    for track in (2, 3, 4):  # the other instance fills the minute and is refused: a ban
        fetch(other, track)
    assert not fetch(other, 5).allowed
    clock.advance(0.5)
    decision = fetch(one, 1)  # a repeat on the first instance: its track check is its ban alone
    assert not decision.allowed and decision.banned and decision.rule_id == "minute"


def test_the_value_remembered_is_the_requests_own(tmp_path) -> None:
    """Two requests in flight at once (a store that yields, as Redis does): the refused one's
    track must not be remembered as counted by the allowed one."""
    clock = FakeClock(T0)
    pause = asyncio.Event()
    store = Recording(MemoryStore(), pause)
    guard = Guard(policy_with(tmp_path, RULES.replace("max: 3, per: 1m", "max: 1, per: 1m")), store, clock=clock)  # type: ignore[arg-type]
    client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})

    def facts(track: int):
        return guard.facts(client, CHROME, f"/tracks/{track}/stream", session=Session("s1", T0, state="page"))

    async def both():
        first = asyncio.ensure_future(guard.decide(facts(1)))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(guard.decide(facts(2)))  # built while the first is in flight
        await asyncio.sleep(0)
        pause.set()
        return await first, await second

    allowed, refused = run(both())
    assert allowed.allowed and not refused.allowed
    clock.advance(0.5)
    assert not run(guard.decide(facts(2))).allowed  # counted (and refused) again, not skipped
    assert counted(store.seen[-1])["minute"] == "2"


def test_a_repeat_with_nothing_to_count_or_look_up_costs_no_store_call(tmp_path, make_store) -> None:
    clock = FakeClock(T0)
    store = Recording(make_store())
    day_only = RULES[: RULES.index("  - id: minute")]
    guard = Guard(policy_with(tmp_path, day_only), store, clock=clock)  # type: ignore[arg-type]
    assert fetch(guard, 1).allowed and fetch(guard, 1).allowed
    assert len(store.seen) == 1
    assert fetch(guard, 2).allowed and len(store.seen) == 2  # a new track is counted
