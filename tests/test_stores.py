"""Counter semantics every store shares: GCRA rates, distinct-track windows, strikes and bans."""

from __future__ import annotations

import pytest
from support import run

from guard.policy.limits import Ban, Budget, Check, DistinctLimit, RateLimit
from guard.stores.memory import MemoryStore

T0 = 1_800_000_000.0


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(max_entries=10_000)


def apply(store, now: float, *checks: Check):
    return run(store.apply(now, list(checks)))


def test_gcra_allows_the_burst_then_the_sustained_rate(store) -> None:
    rate = Check("k:rate", RateLimit(requests=60, per=60, burst=5))  # 1/s, 5 at once
    results = [apply(store, T0, rate).denied for _ in range(6)]
    assert results == [None] * 5 + [0]
    verdict = apply(store, T0, rate)
    assert verdict.retry_after == pytest.approx(1.0)
    assert apply(store, T0 + 1.0, rate).denied is None  # one interval later: one more
    assert apply(store, T0 + 1.0, rate).denied == 0


def test_gcra_has_no_window_edge_burst(store) -> None:
    rate = Check("k:edge", RateLimit(requests=10, per=10, burst=10))
    allowed = 0
    for tenth in range(200):  # 20 seconds, ten requests a second attempted... at 10x the rate
        for _ in range(10):
            allowed += apply(store, T0 + tenth / 10, rate).denied is None
    # 10 of burst + 1/s sustained over 20 s: never the 2x a fixed window allows at its edge.
    assert allowed <= 10 + 20 + 1


def test_distinct_window_counts_values_not_requests(store) -> None:
    limit = DistinctLimit("track", max=3, per=60)
    for track in ("1", "2", "3", "1", "2", "3", "3"):
        assert apply(store, T0, Check("k:d", limit, track)).denied is None
    verdict = apply(store, T0 + 10, Check("k:d", limit, "4"))
    assert verdict.denied == 0
    assert verdict.retry_after == pytest.approx(50)  # track 1 leaves the window 60 s after T0
    assert apply(store, T0 + 10, Check("k:d", limit, "2")).denied is None  # already counted: fine
    assert apply(store, T0 + 60, Check("k:d", limit, "4")).denied is None  # 1 and 3 have left


def test_distinct_limit_skips_requests_without_a_track(store) -> None:
    limit = DistinctLimit("track", max=1, per=60)
    assert apply(store, T0, Check("k:n", limit, "1")).denied is None
    assert apply(store, T0, Check("k:n", limit, None)).denied is None


def test_a_denial_changes_no_other_counter(store) -> None:
    rate = Check("k:r2", RateLimit(requests=100, per=60, burst=100))
    tracks = DistinctLimit("track", max=1, per=60)
    assert apply(store, T0, rate, Check("k:t2", tracks, "1")).denied is None
    for _ in range(50):
        assert apply(store, T0, rate, Check("k:t2", tracks, "2")).denied == 1
    # The 50 denied requests did not use up the rate limit: 98 more fit in the burst.
    assert sum(apply(store, T0, rate).denied is None for _ in range(100)) == 99


def test_strikes_escalate_to_a_ban_that_expires(store) -> None:
    check = Check("k:b", DistinctLimit("track", max=1, per=60), None, Ban(after=3, within=60, duration=600))
    assert apply(store, T0, Check(check.key, check.limit, "1", check.ban)).denied is None
    first = apply(store, T0, Check(check.key, check.limit, "2", check.ban))
    assert first.denied == 0 and first.banned_until is None
    apply(store, T0 + 1, Check(check.key, check.limit, "3", check.ban))
    banned = apply(store, T0 + 2, Check(check.key, check.limit, "4", check.ban))
    assert banned.banned_until == pytest.approx(T0 + 602)
    # While banned even an already-counted track is refused, with the ban's remaining time.
    during = apply(store, T0 + 100, Check(check.key, check.limit, "1", check.ban))
    assert during.denied == 0 and during.retry_after == pytest.approx(502)
    assert apply(store, T0 + 603, Check(check.key, check.limit, "1", check.ban)).denied is None


def test_strikes_outside_the_window_do_not_add_up(store) -> None:
    limit, ban = DistinctLimit("track", max=1, per=1000), Ban(after=2, within=10, duration=600)
    apply(store, T0, Check("k:s", limit, "1", ban))
    assert apply(store, T0, Check("k:s", limit, "2", ban)).banned_until is None
    assert apply(store, T0 + 11, Check("k:s", limit, "3", ban)).banned_until is None  # the first expired


def test_memory_store_is_bounded() -> None:
    store = MemoryStore(max_entries=1000)
    limit = RateLimit(requests=10, per=60, burst=10)
    for n in range(50_000):
        store.apply_sync(T0, [Check(f"k:{n}", limit)])
    assert len(store) == 450  # short windows and rates: half of what is not kept for bans
    budget = Budget("track", max=10, per=86400)
    for n in range(50_000):
        store.apply_sync(T0, [Check(f"b:{n}", budget, "1")])
    assert len(store) == 900  # and budgets the other half: a tenth of the bound is kept for bans


def test_a_flood_of_new_clients_cannot_evict_a_running_ban() -> None:
    store = MemoryStore(max_entries=1000)
    limit, ban = DistinctLimit("track", max=1, per=60), Ban(after=1, within=60, duration=3600)
    banned = Check("k:scraper", limit, "1", ban)
    store.apply_sync(T0, [banned])
    assert store.apply_sync(T0, [Check("k:scraper", limit, "2", ban)]).banned_until == T0 + 3600
    flood = RateLimit(requests=10, per=60, burst=10)
    for n in range(50_000):  # a rotation through 50,000 addresses: every counter of theirs is new
        store.apply_sync(T0 + 1, [Check(f"k:{n}", flood), Check(f"k:{n}:tracks", limit, str(n))])
    assert len(store) <= 1000
    verdict = store.apply_sync(T0 + 2, [Check("k:scraper", limit, "3", ban)])
    assert verdict.denied == 0 and verdict.banned_until is not None  # still banned


def test_the_lasting_tables_memory_is_bounded_in_registers_too() -> None:
    """Budgets that count many values take more memory: the table holds fewer of them, the
    lightest going first, and a heavy one written last is kept."""
    store = MemoryStore(max_entries=20_000)  # 9,000 lasting entries, 72,000 registers and values
    budget = Budget("track", max=10_000, per=86400)
    for n in range(2000):
        store.apply_sync(T0 + n, [Check(f"b:{n}", budget, "1")])
    for n in range(150):  # 150 budgets of 500 tracks each: 75,000 registers
        for t in range(500):
            store.apply_sync(T0 + 3000 + n, [Check(f"heavy:{n}", budget, str(t))])
    lasting = store._lasting
    assert lasting._units <= lasting.units
    assert not any(lasting.peek(f"b:{n}") for n in range(2000))  # the light ones went first
    assert lasting.peek("heavy:149") is not None and len(lasting) < 150
