"""The Redis store against a real redis-server: same verdicts as the memory store,
one round trip per request, keys that expire and share one hash slot."""

from __future__ import annotations

import random

import pytest
from support import GPTBOT, browser_user_agents, run

from guard.identity.address import ClientResolver
from guard.policy.engine import Guard
from guard.policy.limits import Ban, Check, DistinctLimit, RateLimit
from guard.sessions.tokens import Session
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore

T0 = 1_800_000_000.0


def traffic(seed: int, n: int) -> list[tuple[float, str, str, str, str | None]]:
    """A reproducible mix: listeners, a bulk fetcher, a UA and session rotator, a subnet rotator
    (without sessions), crawlers; each request with the session it carries, if any."""
    rng = random.Random(seed)
    uas = browser_user_agents()
    out = []
    for i in range(n):
        persona = rng.random()
        if persona < 0.25:
            ip, ua, track = f"198.51.100.{rng.randint(1, 5)}", uas[rng.randint(0, 4)], rng.randint(1, 30)
            session: str | None = f"{ip}/{ua}"
        elif persona < 0.4:
            ip, ua, track, session = "192.0.2.77", uas[7], rng.randint(1, 5000), "bulk"
        elif persona < 0.7:
            ip, ua, track = "192.0.2.78", rng.choice(uas), rng.randint(1, 5000)
            session = f"rotating-{i % 400}"
        elif persona < 0.92:
            ip, ua, track = f"203.0.113.{rng.randint(1, 254)}", uas[9], rng.randint(1, 5000)
            session = f"{ip}/{ua}" if persona < 0.9 else None
        else:
            ip, ua, track, session = "192.0.2.99", GPTBOT, rng.randint(1, 50), None
        path = rng.choice((f"/tracks/{track}/stream", f"/api/tracks/{track}", f"/tracks/{track}", "/"))
        out.append((rng.choice((0.0, 0.0, 0.0, 0.01, 0.03, 0.1)), ip, ua, path, session))
    return out


def test_memory_and_redis_give_the_same_decision_for_every_request(policy, redis_url) -> None:
    redis_store = RedisStore.from_url(redis_url, timeout=2.0)
    clock = [T0]
    guards = [Guard(policy, MemoryStore(), clock=lambda: clock[0]), Guard(policy, redis_store, clock=lambda: clock[0])]
    resolver = ClientResolver()

    async def main() -> list:
        differences = []
        outcomes = set()
        for n, (step, ip, ua, path, sid) in enumerate(traffic(seed=7, n=8000)):
            clock[0] += step
            client = resolver.resolve({"client": (ip, 1), "headers": []})
            session = Session(sid, T0, state="page") if sid is not None else None
            decided = []
            for guard in guards:
                d = await guard.decide(guard.facts(client, ua, path, session=session))
                decided.append((d.action, d.rule_id, d.retry_after_header))
            outcomes.add(decided[0][:2])
            if decided[0] != decided[1]:
                differences.append((n, ip, path, decided))
        await redis_store.close()
        return differences, outcomes

    differences, outcomes = run(main())
    assert differences == []
    # The traffic exercised allows, blocks, throttles, bans and challenges (else the comparison
    # proves little).
    assert {a for a, _ in outcomes} == {"allow", "block", "throttle", "challenge"}
    assert {"ai-training", "track-sprint", "address-tracks", "subnet-tracks"} <= {r for _, r in outcomes}
    assert "session-required" in {r for _, r in outcomes}
    assert redis_store.stats.errors == 0 and redis_store.stats.fallbacks == 0


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_store_semantics_match_on_a_ban_sequence(kind, redis_url) -> None:
    store = MemoryStore() if kind == "memory" else RedisStore.from_url(redis_url, timeout=2.0)
    limit, ban = DistinctLimit("track", max=2, per=60), Ban(after=3, within=30, duration=120)

    async def main() -> list:
        got = []
        for step, item in [(0, "1"), (0, "2"), (1, "3"), (1, "4"), (1, "5"), (1, "1"), (200, "1")]:
            now = T0 + step if step < 100 else T0 + 200
            verdict = await store.apply(now, [Check("guard:{t}:b", limit, item, ban)])
            got.append((verdict.denied, round(verdict.retry_after, 3), verdict.banned_until))
        await store.close()
        return got

    assert run(main()) == [
        (None, 0.0, None),
        (None, 0.0, None),
        (0, 59.0, None),
        (0, 59.0, None),
        (0, 120.0, T0 + 121),
        (0, 120.0, T0 + 121),
        (None, 0.0, None),
    ]


def test_one_round_trip_per_checked_request_and_none_when_banned(policy, redis_server, redis_url) -> None:
    store = RedisStore.from_url(redis_url, timeout=2.0)
    clock = [T0]
    guard = Guard(policy, store, clock=lambda: clock[0])
    client = ClientResolver().resolve({"client": ("192.0.2.10", 1), "headers": []})
    admin = redis_server.client()

    def commands() -> int:
        stats = admin.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    async def main() -> None:
        ua = browser_user_agents()[0]
        await guard.decide(guard.facts(client, ua, "/api/tracks/1"))  # loads the script
        before = commands()
        for track in range(2, 41):
            assert (await guard.decide(guard.facts(client, ua, f"/api/tracks/{track}"))).allowed
        assert commands() - before == 39  # one script call per allowed request
        # Hammer until banned, then count what further requests cost.
        for track in range(41, 100):
            decision = await guard.decide(guard.facts(client, ua, f"/api/tracks/{track}"))
        assert decision.action == "block" and "banned" in decision.reason
        before = commands()
        for track in range(100, 200):
            assert (await guard.decide(guard.facts(client, ua, f"/api/tracks/{track}"))).action == "block"
        assert commands() == before  # known bans are answered locally
        await store.close()

    run(main())


def test_keys_are_namespaced_hash_tagged_and_expire(policy, redis_server, redis_url) -> None:
    store = RedisStore.from_url(redis_url, timeout=2.0)
    guard = Guard(policy, store, namespace="music")
    client = ClientResolver().resolve({"client": ("2001:db8:1:2:3:4:5:6", 1), "headers": []})

    session = Session("a-listener", T0, state="page")

    async def main() -> None:
        for track in range(1, 60):
            facts = guard.facts(client, browser_user_agents()[1], f"/tracks/{track}/stream", session=session)
            await guard.decide(facts)
        await store.close()

    run(main())
    admin = redis_server.client()
    keys = [k.decode() for k in admin.keys("*")]
    # The client's network as hash tag; a session's own counters under the session's, which
    # follow it from network to network.
    own = guard._session_prefix(session)
    assert own.startswith("music:{~s.") and any(k.startswith(own) for k in keys)
    assert keys and all(k.startswith(("music:{2001:db8:1:2::/64}:", own)) for k in keys)
    assert all(":session-" in k for k in keys if k.startswith(own))
    assert all(admin.pttl(k) > 0 for k in keys)  # every key expires by itself


def test_a_gcra_denial_in_redis_matches_memory_to_the_microsecond(redis_url) -> None:
    rate = RateLimit(requests=7, per=60, burst=2)  # an interval that is not a whole number of ms

    async def main(store) -> list:
        out = []
        for step in (0, 0, 0, 3.3, 8.571428, 8.571429, 20):
            out.append(await store.apply(T0 + step, [Check("guard:{x}:r", rate)]))
        await store.close()
        return out

    assert run(main(MemoryStore())) == run(main(RedisStore.from_url(redis_url, timeout=2.0)))


def test_concurrent_requests_share_round_trips_and_keep_their_verdicts(policy, redis_server, redis_url) -> None:
    import asyncio

    store = RedisStore.from_url(redis_url, timeout=2.0)
    clock = [T0]
    memory_guard = Guard(policy, MemoryStore(), clock=lambda: clock[0])
    redis_guard = Guard(policy, store, clock=lambda: clock[0])
    resolver = ClientResolver()
    requests = [
        (resolver.resolve({"client": (ip, 1), "headers": []}), ua, path, Session(sid, T0, state="page"))
        for _, ip, ua, path, sid in traffic(seed=3, n=400)
        if sid is not None
    ]

    async def main() -> tuple[list, list]:
        expected = [await memory_guard.decide(memory_guard.facts(*r[:3], session=r[3])) for r in requests]
        # All at once: they queue in the same event-loop tick and go out in batches.
        got = await asyncio.gather(*(redis_guard.decide(redis_guard.facts(*r[:3], session=r[3])) for r in requests))
        await store.close()
        return expected, got

    expected, got = run(main())
    assert [(d.action, d.rule_id) for d in got] == [(d.action, d.rule_id) for d in expected]
    assert store.stats.calls <= len(requests) // 32  # batches of up to 64 requests
    assert store.stats.errors == 0
