"""A patient scraper against the request path's shortcuts.

Each test is one attempt that held: to get a track served without it ever being counted
(the repeat skip), to make the stores disagree once repeats are skipped, or to use the
request path's caches (forwarded chains, cookies, sessions) to be taken for someone else,
to outlive a ban, or to grow the guard's memory. They keep the guarantees they check. The
attempts on the Redis budget index that got through are in tests/test_budgets.py.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
import test_repeats
from support import CHROME, RULES, FakeClock, Visitor, run
from test_networks import policy_with
from test_repeats import T0, Recording, fetch

import guard.sessions.gate as gate_module
from guard.policy.engine import REPEAT_SHARE, Guard
from guard.policy.limits import Check, Verdict
from guard.policy.rules import load_rules
from guard.sessions.service import Sessions
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import Session, SessionKeys
from guard.stores.hll import SLICES
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore

ROOT = Path(__file__).resolve().parent.parent
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.fixture(autouse=True)
def _one_loop(monkeypatch: pytest.MonkeyPatch, one_loop) -> None:
    """Every call of a test on one event loop (see conftest's ``one_loop``), here and in
    the helpers borrowed from test_repeats."""
    monkeypatch.setattr(test_repeats, "run", one_loop)
    monkeypatch.setattr(sys.modules[__name__], "run", one_loop)


class Logged(Recording):
    """A store that yields before each call (as Redis does, so requests interleave) and keeps
    every call's time, checks and verdict."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.calls: list[tuple[float, list[Check], Verdict]] = []

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        await asyncio.sleep(0)
        verdict = await self.store.apply(now, checks)
        self.calls.append((now, list(checks), verdict))
        return verdict


def rule_of(check: Check) -> str:
    return check.key.split("}:")[1].split(":")[0]


# -- 1. the repeat skip ---------------------------------------------------------------------------

SCRAPER_RULES = """
  - id: session-day
    match: {path: audio}
    limit: {key: session, distinct: track, max: 5, per: 1d}
    action: throttle
  - id: minute
    match: {path: [audio, pages]}
    limit: {key: ip_ua, distinct: track, max: 3, per: 1m}
    action: throttle
  - id: rate
    match: {path: audio}
    limit: {key: ip_ua, requests: 120, per: 1m, burst: 12}
    action: throttle
"""


def test_a_patient_scraper_never_gets_a_track_that_was_not_counted(tmp_path, make_store) -> None:
    """Repeats, new tracks, requests in flight together (some refused next to allowed ones),
    two sessions, steps of the clock around the skip's edges: every track served was counted
    by an allowed request within the skip's reach (the window's thirtieth, the budget's
    slice), the minute window never holds more than its maximum over its length less the
    lag, and the day budget never more than its maximum."""
    rng = random.Random(1234)
    clock = FakeClock(T0 + 1800)
    store = Logged(make_store())
    guard = Guard(policy_with(tmp_path, SCRAPER_RULES), store, clock=clock)  # type: ignore[arg-type]
    minute_lag = 60 / REPEAT_SHARE
    served: list[tuple[float, int, str]] = []

    async def burst(requests: list[tuple[int, str]]) -> list:
        async def one(track: int, session: str):
            client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})
            path = f"/tracks/{track}/stream" if rng.random() < 0.8 else f"/tracks/{track}"
            facts = guard.facts(client, CHROME, path, session=Session(session, T0, state="page"))
            return track, session, facts.where.group, await guard.decide(facts)

        return await asyncio.gather(*(one(track, session) for track, session in requests))

    for _ in range(500):
        size = rng.choice([1, 1, 1, 2, 3])
        requests = [
            (rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]), rng.choice(["s1", "s1", "s1", "s2"])) for _ in range(size)
        ]
        for track, session, group, decision in run(burst(requests)):
            if decision.allowed:
                served.append((clock(), track, session if group == "audio" else ""))
        clock.advance(rng.choice([0.05, 0.5, 1.0, 1.9, 2.0, 2.1, 5.0, 30.0, 61.0, 3599.0, 3600.0]))

    allowed_calls = [(now, checks) for now, checks, verdict in store.calls if verdict.denied is None]
    assert len(served) > 200 and len(store.calls) - len(allowed_calls) > 50  # served, and refused
    skipped = sum(all(rule_of(c) != "minute" or c.item is None for c in checks) for _, checks, _ in store.calls)
    assert skipped > 10  # repeats were skipped, not only counted
    for t, track, session in served:
        # The minute window counted this track on an allowed request at most its lag before.
        assert any(
            t - minute_lag <= now <= t and any(rule_of(c) == "minute" and c.item == str(track) for c in checks)
            for now, checks in allowed_calls
        ), (t, track)
        if session:  # audio: the session's day budget counted it in the same hour (slice)
            hashed = guard.budget_item(str(track))
            assert any(
                now // 3600 == t // 3600
                and now <= t
                and any(
                    rule_of(c) == "session-day" and c.key.endswith(f":s:{session}") and c.item == hashed for c in checks
                )
                for now, checks in allowed_calls
            ), (t, track, session)
    for t, _, _ in served:
        recent = {track for u, track, _ in served if t - (60 - minute_lag) < u <= t}
        assert len(recent) <= 3, (t, recent)
    for session in ("s1", "s2"):
        for t, _, s in served:
            if s == session:
                day = {
                    track for u, track, s2 in served if s2 == session and t // 3600 - SLICES < u // 3600 <= t // 3600
                }
                assert len(day) <= 5, (t, session, day)


def test_skipping_instances_sharing_redis_decide_as_exact_ones(tmp_path, redis_url, one_loop) -> None:
    """Two instances behind one load balancer share Redis; each remembers its own repeats.
    Budgets must decide request by request as two instances counting everything do."""
    budgets = SCRAPER_RULES.replace("max: 3, per: 1m", "max: 3, per: 1s")  # the minute: a short exact window

    class Exact(Guard):
        def _checks(self, facts, limits, now_us):
            return super()._checks(facts, limits, None)

    rng = random.Random(99)
    clock = FakeClock(T0)
    shared = [RedisStore.from_url(redis_url, timeout=2.0) for _ in range(2)]
    skipping = [Guard(policy_with(tmp_path, budgets), store, clock=clock, namespace="a") for store in shared]
    exact = [Exact(policy_with(tmp_path, budgets), store, clock=clock, namespace="b") for store in shared]
    for _ in range(400):
        track, session, instance = (
            rng.choice([1, 2, 3, 4, 5, 6, rng.randint(7, 40)]),
            rng.choice(["s1", "s2"]),
            rng.randint(0, 1),
        )
        one, other = fetch(skipping[instance], track, session=session), fetch(exact[instance], track, session=session)
        assert (one.action, one.rule_id) == (other.action, other.rule_id)
        clock.advance(rng.choice([0.05, 0.4, 3.0, 700.0]))
    for store in shared:
        run(store.close())
        assert store.stats.fallbacks == 0


def test_a_shadow_window_that_would_refuse_a_track_reports_it_again_on_the_repeat(tmp_path, make_store) -> None:
    shadow = """
  - id: watch
    match: {path: audio}
    limit: {key: ip_ua, distinct: track, max: 1, per: 1m}
    action: throttle
    shadow: true
"""
    clock = FakeClock(T0)
    guard = Guard(policy_with(tmp_path, shadow), make_store(), clock=clock)
    assert fetch(guard, 1).allowed and not fetch(guard, 1).shadowed
    for _ in range(3):  # track 2 was never counted (it would have gone over): reported every time
        decision = fetch(guard, 2)
        assert decision.allowed and [rule.id for rule, _ in decision.shadowed] == ["watch"]
        clock.advance(0.5)


def test_a_track_spelled_otherwise_or_under_another_group_is_the_same_track_and_no_other(tmp_path, make_store) -> None:
    one = """
  - id: minute
    match: {path: [audio, pages, content_api]}
    limit: {key: ip_ua, distinct: track, max: 1, per: 1m}
    action: throttle
"""
    clock = FakeClock(T0)
    guard = Guard(policy_with(tmp_path, one), make_store(), clock=clock)
    client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})
    session = Session("s1", T0, state="page")

    def get(path: str):
        return run(guard.decide(guard.facts(client, CHROME, path, session=session)))

    assert get("/tracks/7").allowed  # the page counts track 7
    for path in ("/tracks/007/stream", "/tracks/+7/stream", "/tracks/%37/stream", "/api/tracks/0_7", "/tracks/7"):
        assert get(path).allowed, path  # the same track: a repeat
    for path in ("/tracks/8/stream", "/tracks/7x/stream", "/api/tracks/70", "/tracks/-7/stream", "/tracks/7.0/stream"):
        assert not get(path).allowed, path  # another track, however close its spelling: counted, refused


def test_a_session_switch_counts_the_track_for_the_new_session(tmp_path, make_store) -> None:
    day = """
  - id: session-day
    match: {path: audio}
    limit: {key: session, distinct: track, max: 1, per: 1d}
    action: throttle
"""
    clock = FakeClock(T0)
    store = Recording(make_store())
    guard = Guard(policy_with(tmp_path, day), store, clock=clock)  # type: ignore[arg-type]
    assert fetch(guard, 1, session="s1").allowed
    assert fetch(guard, 1, session="s2").allowed  # counted under the second session's own key
    assert store.seen[-1][0].key.endswith(":s:s2") and store.seen[-1][0].item is not None
    for session in ("s2", "s1"):  # each session's one track is spent
        assert not fetch(guard, 2, session=session).allowed


def test_a_reload_forgets_what_was_counted_under_the_old_rules(tmp_path, make_store) -> None:
    """A repeat after a reload (or finishing while one happens) is counted under the new rules."""
    rules = """
  - id: minute
    match: {path: audio}
    limit: {key: ip_ua, distinct: track, max: 3, per: 1m}
    action: throttle
"""
    clock = FakeClock(T0)
    store = Recording(make_store(), asyncio.Event())
    guard = Guard(policy_with(tmp_path, rules), store, clock=clock)  # type: ignore[arg-type]
    assert store.pause is not None
    client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})

    def facts(track: int):
        return guard.facts(client, CHROME, f"/tracks/{track}/stream", session=Session("s1", T0, state="page"))

    async def reload_mid_flight():
        first = asyncio.ensure_future(guard.decide(facts(1)))  # in flight under the old rules
        await asyncio.sleep(0)
        guard.use_policy(policy_with(tmp_path, rules.replace("per: 1m", "per: 10m")))
        store.pause.set()
        return await first

    assert run(reload_mid_flight()).allowed
    assert run(guard.decide(facts(1))).allowed
    assert store.seen[-1][0].item == "1"  # the repeat is counted by the new rule, not skipped


@pytest.mark.parametrize("scope", ["subnet", "address"])
def test_a_ban_another_instance_set_on_the_address_or_subnet_reaches_a_skipped_repeat(
    tmp_path, make_store, scope
) -> None:
    rules = f"""
  - id: minute
    match: {{path: audio}}
    limit: {{key: ip, distinct: track, max: 2, per: 1m}}
    ban: {{after: 1, within: 1m, for: 1h, scope: {scope}}}
    action: throttle
"""
    shared = make_store()
    clock = FakeClock(T0)
    one = Guard(policy_with(tmp_path, rules), shared, clock=clock)
    other = Guard(policy_with(tmp_path, rules), shared, clock=clock)
    assert fetch(one, 1, ip="198.51.100.7").allowed
    # The other instance bans a neighbour (subnet scope) or the address itself under another UA.
    neighbour = "198.51.100.8" if scope == "subnet" else "198.51.100.7"
    for track in (2, 3, 4):
        client = other.resolver.resolve({"client": (neighbour, 1), "headers": []})
        session = Session("other", T0, state="page")
        decision = run(other.decide(other.facts(client, FIREFOX, f"/tracks/{track}/stream", session=session)))
    assert decision.banned
    clock.advance(0.5)
    repeat = fetch(one, 1, ip="198.51.100.7")  # its track check looks at bans only
    assert not repeat.allowed and repeat.banned, scope


def test_a_client_without_cookies_still_meets_the_minting_limit_on_repeats(tmp_path, make_store) -> None:
    clock = FakeClock(T0)
    guard = Guard(load_rules(RULES), make_store(), clock=clock)
    client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})
    minted = 0
    for _ in range(45):  # the same page again and again: its track checks are left out after the first
        decision = run(guard.decide(guard.facts(client, CHROME, "/tracks/7")))
        assert decision.allowed
        minted += decision.mint
        clock.advance(0.1)
    limit = guard.sessions.mint_per_address  # type: ignore[union-attr]
    assert minted == limit.burst


# -- 2. the Redis budget slice index ------------------------------------------------------------


def test_memory_and_redis_guards_agree_with_repeats_skipped(tmp_path, redis_url, one_loop) -> None:
    """The parity of the two stores, through the engine: repeats skipped, checks left with only
    their ban, budgets and windows over three clients and two sessions each."""
    rules = SCRAPER_RULES.replace(
        "    action: throttle\n  - id: minute",
        "    action: throttle\n    ban: {after: 2, within: 1h, for: 2h}\n  - id: minute",
    )
    rng = random.Random(5)
    clock = FakeClock(T0)
    memory = Guard(policy_with(tmp_path, rules), MemoryStore(), clock=clock)
    shared = RedisStore.from_url(redis_url, timeout=2.0)
    redis_guard = Guard(policy_with(tmp_path, rules), shared, clock=clock)
    denied = 0
    for n in range(600):
        ip = rng.choice(["198.51.100.7", "198.51.100.8", "203.0.113.9"])
        track, session = rng.choice([1, 2, 3, rng.randint(4, 30)]), rng.choice(["a", "b"])
        a = fetch(memory, track, ip=ip, session=ip + session)
        b = fetch(redis_guard, track, ip=ip, session=ip + session)
        assert (a.action, a.rule_id, a.banned, a.retry_after_header) == (
            b.action,
            b.rule_id,
            b.banned,
            b.retry_after_header,
        ), n
        denied += not a.allowed
        clock.advance(rng.choice([0.2, 1.0, 2.5, 40.0, 900.0]))
    run(shared.close())
    assert shared.stats.fallbacks == 0
    assert denied > 50


# -- 3. the request path's caches ----------------------------------------------------------------


def test_a_flood_of_cookie_headers_keeps_the_cache_within_what_the_docs_promise() -> None:
    """A scraper sending a new, maximal Cookie header each time: the remembered parses stay
    within the figures docs/sessions.md gives (and so within a few tens of megabytes)."""
    docs = (ROOT / "docs" / "sessions.md").read_text(encoding="utf-8")
    lines, size = gate_module.COOKIE_LINES, gate_module.MAX_COOKIE_LINE
    assert f"{lines:,} headers up to {size // 1024} KB" in " ".join(docs.split())
    sessions = Sessions(SessionSettings(), SessionKeys("k" * 40))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(lines + 500):
            line = (b"guard_session=%x" % n + b"A" * size)[:size]
            sessions.gate.request({"type": "http"}, {b"cookie": line})
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(sessions.gate._cookies) == lines
    assert grown < 48e6, grown


def test_a_cached_forwarded_chain_is_read_again_when_the_rules_read_another_header(tmp_path) -> None:
    guard = Guard(load_rules(RULES), trusted_proxies=["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"192.0.2.7"), (b"x-real-ip", b"198.51.100.9")]
    scope = {"client": ("10.0.0.1", 1), "headers": headers}
    assert guard.resolver.resolve(scope).ip == "192.0.2.7"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"version: 1\nextends: {RULES}\nclients: {{forwarded: x-real-ip}}\n")
    guard.use_policy(load_rules(rules))
    assert guard.resolver.resolve(scope).ip == "198.51.100.9"
    # The same bytes in another chain position are another chain: no cached answer is reused.
    first = guard.resolver.resolve({"client": ("10.0.0.1", 1), "headers": [(b"x-real-ip", b"198.51.100.9, 192.0.2.1")]})
    assert first.ip == "192.0.2.1"


def test_a_flood_of_new_clients_through_every_cache_cannot_free_a_banned_client(tmp_path) -> None:
    """A ban, then more new clients, chains, cookies and paths than any cache holds: the
    banned client is still refused (the store keeps bans apart from what a flood evicts)."""
    rules = """
  - id: minute
    match: {path: audio}
    limit: {key: ip_ua, distinct: track, max: 2, per: 1m}
    ban: {after: 1, within: 1m, for: 1h, scope: client}
    action: throttle
"""
    clock = FakeClock(T0)
    store = MemoryStore(max_entries=3000)
    guard = Guard(policy_with(tmp_path, rules), store, clock=clock)
    for track in (1, 2, 3):
        banned = fetch(guard, track)
    assert banned.banned
    guard._bans.clear()  # as if this process's own note of the ban had been evicted too
    for n in range(9000):  # three times the store's size, each a new client, session and track
        fetch(guard, 10 + n % 40, ip=f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", session=f"flood{n}")
    assert len(store) <= 3000
    clock.advance(1)
    again = fetch(guard, 1)
    assert not again.allowed and again.banned


def test_a_remembered_session_check_dies_with_the_key_a_reload_retires(tmp_path) -> None:
    """The key file rolls on a reload and the old key is dropped: a cookie the old key signed,
    remembered as valid, is refused from then on."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from guard.middleware import GuardMiddleware

    keys = tmp_path / "session.key"
    keys.write_text("a" * 40 + "\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"version: 1\nextends: {RULES}\nsessions:\n  key_file: {keys}\n")
    app = Starlette(routes=[Route("/{path:path}", lambda request: PlainTextResponse("ok"))])
    middleware = GuardMiddleware(app, rules, clock=FakeClock(T0))
    browser = Visitor(middleware, "192.0.2.7")
    assert run(browser.get("/tracks/7/stream")).status_code == 200  # its page first: the cookie
    assert run(browser.get("/tracks/7/stream")).status_code == 200  # the cookie, remembered as valid
    assert "guard_session" in browser.cookies
    keys.write_text("b" * 40 + "\n")  # rolled, and the old key retired at once
    assert run(middleware.reload("test"))
    refused = run(browser.get("/tracks/7/stream"))
    assert refused.status_code == 401, refused.status_code
