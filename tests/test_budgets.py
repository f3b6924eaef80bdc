"""Hour and day budgets: HyperLogLog slices in Redis, the same registers and estimate in memory."""

from __future__ import annotations

import random

import pytest
import redis
from support import run

from guard.policy.limits import Ban, Budget, Check, DistinctLimit, Verdict, distinct_limit
from guard.stores.hll import REGISTERS, SLICES, Q, SlicedSketch, estimate, murmurhash64a, register_of
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight (UTC): day slices start on the hour


def test_long_windows_are_budgets_short_ones_exact() -> None:
    assert isinstance(distinct_limit("track", 40, 60), DistinctLimit)
    assert isinstance(distinct_limit("track", 40, 600), DistinctLimit)
    day = distinct_limit("track", 300, 86400)
    assert isinstance(day, Budget) and day.slice_us == 3_600_000_000
    assert distinct_limit("track", 60, 3600).slice_us == 150_000_000


def test_murmurhash64a_mixes_every_tail_length() -> None:
    # The empty input with seed 0 hashes to 0 by construction; every tail length (1-7 bytes past
    # a multiple of 8) changes the hash. Agreement with Redis itself: the PFCOUNT test below.
    assert murmurhash64a(b"", 0) == 0
    hashes = {murmurhash64a(b"x" * n) for n in range(17)}
    assert len(hashes) == 17


def test_estimates_equal_redis_pfcount(redis_url) -> None:
    """Registers and estimate are Redis's own: the same count for every set size."""
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(3)
    for n in (0, 1, 2, 7, 100, 299, 300, 301, 1000, 5000, 40000):
        items = [str(rng.randint(1, 10**7)) for _ in range(n)]
        client.delete("h")
        if items:
            client.pfadd("h", *items)
        registers: dict[int, int] = {}
        for item in items:
            index, value = register_of(item)
            registers[index] = max(registers.get(index, 0), value)
        histogram = [REGISTERS - len(registers)] + [0] * (Q + 1)
        for value in registers.values():
            histogram[value] += 1
        assert estimate(histogram) == client.pfcount("h"), n


def test_one_register_set_estimates_one_whatever_its_value() -> None:
    # The memory store's shortcut for an empty budget rests on this.
    for value in range(1, Q + 2):
        histogram = [REGISTERS - 1] + [0] * (Q + 1)
        histogram[value] = 1
        assert estimate(histogram) == 1


def test_a_sketch_forgets_slices_that_leave_the_window() -> None:
    sketch = SlicedSketch()
    sketch.advance(100)
    for n in range(50):
        sketch.add(f"a{n}")
    sketch.advance(101)
    for n in range(30):
        sketch.add(f"b{n}")
    assert sketch.total() == 80
    sketch.advance(100 + SLICES - 1)  # slice 100 is still the oldest in the window
    assert sketch.total() == 80 and sketch.oldest() == 100
    sketch.advance(100 + SLICES)  # slice 100 left: only the b's remain
    assert sketch.total() == 30 and sketch.oldest() == 101
    assert sketch.count_with("b3") == 30 and sketch.count_with("new") == 31


def apply(store, now: float, *checks: Check):
    return run(store.apply(now, list(checks)))


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    yield RedisStore.from_url(url, timeout=2.0)


def test_a_day_budget_counts_distinct_tracks_and_lets_replays_through(store) -> None:
    budget = Budget("track", max=100, per=86400)

    async def main() -> tuple[list, list, list]:
        first = [(await store.apply(T0 + n, [Check("k:day", budget, str(n))])).denied for n in range(100)]
        # Every Range request of a counted track (and every replay) still passes.
        replays = [(await store.apply(T0 + 200 + n, [Check("k:day", budget, str(n))])).denied for n in range(100)]
        over = [await store.apply(T0 + 400 + n, [Check("k:day", budget, f"new{n}")]) for n in range(3)]
        await store.close()
        return first, replays, over

    first, replays, over = run(main())
    assert first == [None] * 100
    assert replays == [None] * 100
    assert all(v.denied == 0 for v in over)
    # Room comes back when the first hour (slice) leaves the 24-hour window.
    assert over[0].retry_after == pytest.approx(86400 - 400)


def test_a_budget_slides_by_the_hour(store) -> None:
    budget = Budget("track", max=10, per=86400)

    async def main() -> list:
        out = []
        for n in range(10):  # ten tracks in the first hour
            out.append((await store.apply(T0 + n, [Check("k:slide", budget, f"a{n}")])).denied)
        out.append((await store.apply(T0 + 3 * 3600, [Check("k:slide", budget, "b")])).denied)  # full
        out.append((await store.apply(T0 + 86400 - 1, [Check("k:slide", budget, "b")])).denied)  # still full
        out.append((await store.apply(T0 + 86400, [Check("k:slide", budget, "b")])).denied)  # hour 0 left
        await store.close()
        return out

    assert run(main()) == [None] * 10 + [0, 0, None]


def test_a_budget_denial_escalates_to_a_ban_and_shadow_budgets_only_report(store) -> None:
    budget, ban = Budget("track", max=2, per=3600), Ban(after=2, within=600, duration=3600)

    async def main() -> list:
        out = []
        for n, now in enumerate((0, 1, 2, 3, 4)):
            verdict = await store.apply(T0 + now, [Check("k:ban", budget, f"t{n}", ban)])
            out.append((verdict.denied, verdict.banned_until is not None))
        shadow = await store.apply(T0 + 5, [Check("k:sh", Budget("track", 0 + 1, 3600), "x", None, True)])
        shadow2 = await store.apply(T0 + 6, [Check("k:sh", Budget("track", 1, 3600), "y", None, True)])
        await store.close()
        return [*out, shadow.shadowed, shadow2.shadowed, shadow2.denied]

    result = run(main())
    assert result[:5] == [(None, False), (None, False), (0, False), (0, True), (0, True)]
    assert result[5:] == [(), (0,), None]


def test_memory_and_redis_budgets_agree_request_by_request(redis_url) -> None:
    """Random traffic against a small day budget and an hour budget: identical verdicts."""
    rng = random.Random(11)
    day, hour = Budget("track", max=60, per=86400), Budget("track", max=25, per=3600)
    memory, shared = MemoryStore(), RedisStore.from_url(redis_url, timeout=2.0)

    async def main() -> list:
        differences, denied = [], 0
        now = T0 + 1234.5
        for n in range(3000):
            now += rng.choice((1, 5, 30, 120, 600))
            who = rng.randint(1, 3)
            checks = [Check(f"k:{who}:h", hour, str(rng.randint(1, 400))), Check(f"k:{who}:d", day, None)]
            checks[1] = checks[1]._replace(item=checks[0].item)
            a, b = await memory.apply(now, checks), await shared.apply(now, checks)
            denied += a.denied is not None
            if (a.denied, round(a.retry_after, 3)) != (b.denied, round(b.retry_after, 3)):
                differences.append((n, a, b))
        await shared.close()
        return differences, denied

    differences, denied = run(main())
    assert differences == []
    assert denied > 100  # both budgets were reached many times


def test_a_redis_budget_counts_a_slice_written_by_a_clock_ahead_once_its_time_comes(redis_url) -> None:
    """Slices are found through an index of their numbers: a slice from an instance whose clock
    runs an hour ahead is not counted early, and not forgotten either."""
    day = Budget("track", max=3, per=86400)
    shared = RedisStore.from_url(redis_url, timeout=2.0)

    async def main() -> list:
        out = []
        for n in range(3):  # the instance ahead fills the budget in its next hour
            out.append((await shared.apply(T0 + 3600 + n, [Check("k:skew", day, f"a{n}")])).denied)
        out.append((await shared.apply(T0 + 10, [Check("k:skew", day, "b")])).denied)  # behind: not yet counted
        out.append((await shared.apply(T0 + 3600 + 20, [Check("k:skew", day, "c")])).denied)  # its hour: full
        await shared.close()
        return out

    assert run(main()) == [None, None, None, None, 0]


def test_a_slice_made_late_by_an_instance_behind_never_shortens_the_index(redis_url) -> None:
    """An instance whose clock is ahead makes the next hour's slice; one behind then makes the
    current hour's: the index must outlive both, or the later slice is forgotten in its last
    hour (and with a clock far behind, the whole day)."""
    day = Budget("track", max=3, per=86400)
    shared = RedisStore.from_url(redis_url, timeout=2.0)

    async def main() -> None:
        await shared.apply(T0 + 3600 + 1, [Check("k:{t}:day", day, "ahead")])
        await shared.apply(T0 + 3599, [Check("k:{t}:day", day, "behind")])
        await shared.apply(T0 + 3 * 3600 + 1, [Check("k:{t}:day2", day, "ahead")])
        await shared.apply(T0 + 3 * 3600 - 20 * 3600, [Check("k:{t}:day2", day, "far behind")])
        await shared.close()

    run(main())
    r = redis.Redis.from_url(redis_url)
    for key in ("k:{t}:day", "k:{t}:day2"):
        slices = [k for k in r.keys(key + ":*") if not k.endswith((b":i", b":p"))]
        assert len(slices) == 2 and r.hlen(key + ":i") == 2
        assert r.pttl(key + ":i") >= max(r.pttl(k) for k in slices)


def test_an_instance_ahead_does_not_take_a_slice_from_one_behind(redis_url) -> None:
    """Clocks 30 s apart (within the slack) at the end of a day: the instance ahead sees the
    first hour leave the window; the one behind still counts it."""
    day = Budget("track", max=1, per=86400)
    shared = RedisStore.from_url(redis_url, timeout=2.0)

    async def main() -> list:
        out = [(await shared.apply(T0 + 5, [Check("k:{t}:skew", day, "a")])).denied]
        out.append((await shared.apply(T0 + 86400 - 10, [Check("k:{t}:skew", day, "b")])).denied)  # behind: full
        out.append((await shared.apply(T0 + 86400 + 20, [Check("k:{t}:skew", day, "c")])).denied)  # ahead: room
        out.append((await shared.apply(T0 + 86400 - 9, [Check("k:{t}:skew", day, "b")])).denied)  # behind: still full
        out.append((await shared.apply(T0 + 86400 + 120, [Check("k:{t}:skew", day, "c")])).denied)
        await shared.close()
        return out

    assert run(main()) == [None, 0, None, 0, None]
    r = redis.Redis.from_url(redis_url)
    # Once past the slack for everyone, the first hour's number leaves the index.
    run(_apply_once(redis_url, T0 + 86400 + 3600 + 120, Check("k:{t}:skew", day, "d")))
    assert b"%d" % (T0 // 3600) not in r.hkeys("k:{t}:skew:i")


async def _apply_once(url: str, now: float, check: Check) -> Verdict:
    store = RedisStore.from_url(url, timeout=2.0)
    try:
        return await store.apply(now, [check])
    finally:
        await store.close()
