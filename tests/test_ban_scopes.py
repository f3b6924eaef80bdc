"""Ban scopes and escalation, in both stores: bans that stick, and NATs that are not punished."""

from __future__ import annotations

import random

import pytest
from support import FakeClock, browser_user_agents, device_session, run

from guard.policy.engine import Guard
from guard.policy.limits import SEEN_MAX
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore

UAS = browser_user_agents()


@pytest.fixture(params=["memory", "redis"])
def make_guard(request, policy):
    """A factory of (guard, clock) on a fresh store of each kind (a test's ``main`` closes it)."""

    def make() -> tuple[Guard, FakeClock]:
        if request.param == "memory":
            store = MemoryStore()
        else:
            store = RedisStore.from_url(request.getfixturevalue("redis_url"), timeout=2.0)
        clock = FakeClock()
        return Guard(policy, store, clock=clock), clock

    return make


ISSUED: dict[tuple[int, str, str], float] = {}


async def visit(guard: Guard, ip: str, ua: str, path: str):
    """One request of the device (address, User-Agent), with the session its browser holds:
    issued on the device's first request, as its first page would have."""
    client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
    issued = ISSUED.setdefault((id(guard), ip, ua), guard.clock())
    return await guard.decide(guard.facts(client, ua, path, session=device_session(ip, ua, issued_at=issued)))


async def scrape_until_banned(guard: Guard, clock: FakeClock, ip: str, ua: str, first: int = 1):
    """Walk tracks fast until the guard bans; returns the banning decision."""
    for track in range(first, first + 200):
        decision = await visit(guard, ip, ua, f"/api/tracks/{track}")
        clock.advance(0.05)
        if decision.action == "block":
            return decision
    raise AssertionError("never banned")


async def listen(guard: Guard, clock: FakeClock, ip: str, ua: str, tracks=range(1, 6)) -> list[str]:
    out = []
    for track in tracks:
        out.append((await visit(guard, ip, ua, f"/tracks/{track}/stream")).action)
        clock.advance(1)
    return out


def test_a_new_user_agent_on_a_banned_address_inherits_the_ban(make_guard) -> None:
    guard, clock = make_guard()

    async def main() -> None:
        banned = await scrape_until_banned(guard, clock, "198.51.100.30", UAS[0])
        for ua in UAS[1:6]:
            again = await visit(guard, "198.51.100.30", ua, "/api/tracks/900")
            assert again.action == "block" and again.retry_after_header == banned.retry_after_header
        # ...and it stays inherited: the same User-Agent again, on another path of the rule.
        again = await visit(guard, "198.51.100.30", UAS[3], "/tracks/901")
        assert again.action == "block" and again.retry_after_header == banned.retry_after_header

        await guard.store.close()

    run(main())


def test_a_household_is_not_punished_for_one_bad_device(make_guard) -> None:
    guard, clock = make_guard()
    home = "198.51.100.31"

    async def main() -> None:
        for ua in UAS[1:4]:  # the phones and the laptop were listening before
            assert await listen(guard, clock, home, ua) == ["allow"] * 5
        clock.advance(1800)  # half an hour later, one device starts scraping
        await scrape_until_banned(guard, clock, home, UAS[0])
        for ua in UAS[1:4]:
            assert await listen(guard, clock, home, ua, range(20, 30)) == ["allow"] * 10
        neighbour = "198.51.100.32"  # another household in the same /24
        assert await listen(guard, clock, neighbour, UAS[0]) == ["allow"] * 5

        await guard.store.close()

    run(main())


def test_an_office_nat_is_not_punished_for_one_bad_device(make_guard) -> None:
    guard, clock = make_guard()
    office = "203.0.113.40"
    staff = UAS[1:9]  # eight browser builds across the office, many people each

    async def main() -> None:
        rng = random.Random(5)
        for _ in range(200):  # a morning of listening
            assert (await visit(guard, office, rng.choice(staff), f"/tracks/{rng.randint(1, 500)}")).allowed
            clock.advance(5)
        await scrape_until_banned(guard, clock, office, UAS[0])
        for _ in range(200):
            assert (await visit(guard, office, rng.choice(staff), f"/tracks/{rng.randint(1, 500)}")).allowed
            clock.advance(5)

        await guard.store.close()

    run(main())


def test_bans_under_two_user_agents_hold_the_whole_address(make_guard) -> None:
    guard, clock = make_guard()
    ip = "198.51.100.33"

    async def main() -> None:
        for ua in UAS[:3]:  # three "devices" seen before: the escalation is about established ones
            await listen(guard, clock, ip, ua, range(1, 2))
        await scrape_until_banned(guard, clock, ip, UAS[0])
        assert (await visit(guard, ip, UAS[2], "/api/tracks/1000")).allowed  # one bad device: the rest go on
        second = await scrape_until_banned(guard, clock, ip, UAS[1], first=2000)
        third = await visit(guard, ip, UAS[2], "/api/tracks/3000")
        assert third.action == "block" and third.retry_after_header == second.retry_after_header

        await guard.store.close()

    run(main())


def test_banned_addresses_in_one_subnet_escalate_to_the_subnet_for_a_shorter_time(make_guard) -> None:
    guard, clock = make_guard()

    async def main() -> None:
        neighbour = "192.0.2.200"
        await listen(guard, clock, neighbour, UAS[5], range(1, 2))
        for n, ip in enumerate(("192.0.2.1", "192.0.2.2")):
            for ua in UAS[:2]:
                await listen(guard, clock, ip, ua, range(1, 2))
            for ua in UAS[:2]:  # two devices of each address go bad: the address is banned
                await scrape_until_banned(guard, clock, ip, ua, first=1000 * (n + 1))
            # Two banned addresses: the rest of the /24 is untouched.
            assert (await visit(guard, neighbour, UAS[5], f"/api/tracks/{n + 7}")).allowed
        for ua in UAS[:2]:
            await listen(guard, clock, "192.0.2.3", ua, range(1, 2))
        for ua in UAS[:2]:
            banned = await scrape_until_banned(guard, clock, "192.0.2.3", ua, first=5000)
        held = await visit(guard, neighbour, UAS[5], "/api/tracks/9")
        assert held.action == "block"
        assert float(held.retry_after_header) <= float(banned.retry_after_header) / 4 + 1
        assert (await visit(guard, "192.0.3.1", UAS[5], "/api/tracks/9")).allowed  # the next /24 is not

        await guard.store.close()

    run(main())


def test_the_address_remembers_a_bounded_number_of_user_agents(policy) -> None:
    store = MemoryStore()
    clock = FakeClock()
    guard = Guard(policy, store, clock=clock)

    async def main() -> None:
        for n in range(SEEN_MAX + 50):
            await visit(guard, "198.51.100.34", f"Mozilla/5.0 device-{n}", "/")

    run(main())
    seen = [v for k, v in store._entries._data.items() if k.endswith("seen:198.51.100.34")]
    assert len(seen) == 1 and len(seen[0][1]) == SEEN_MAX


def test_both_stores_agree_on_escalation_traffic(policy, redis_url) -> None:
    """Households, offices, UA switchers, address rotators in one /24, request by request."""
    rng = random.Random(11)
    requests = []
    for _ in range(6000):
        persona = rng.random()
        if persona < 0.3:  # households
            ip, ua, track = f"198.51.100.{rng.randint(2, 4)}", UAS[rng.randint(1, 4)], rng.randint(1, 20)
        elif persona < 0.55:  # a scraper switching User-Agents among them
            ip, ua, track = "198.51.100.2", rng.choice(UAS[5:8]), rng.randint(1, 5000)
        elif persona < 0.9:  # scrapers on four addresses of one /24, two User-Agents each
            ip, ua, track = f"203.0.113.{rng.randint(1, 4)}", UAS[rng.randint(0, 1)], rng.randint(1, 5000)
        else:  # listeners in that /24
            ip, ua, track = f"203.0.113.{rng.randint(100, 110)}", UAS[6], rng.randint(1, 30)
        requests.append((rng.choice((0.0, 0.001, 0.01, 0.05, 0.2)), ip, ua, f"/api/tracks/{track}"))
    clock = [1_800_000_000.0]
    redis_store = RedisStore.from_url(redis_url, timeout=2.0)
    guards = [Guard(policy, MemoryStore(), clock=lambda: clock[0]), Guard(policy, redis_store, clock=lambda: clock[0])]

    async def main() -> tuple[list, set]:
        differences, outcomes = [], set()
        for n, (step, ip, ua, path) in enumerate(requests):
            clock[0] += step
            got = []
            for guard in guards:
                d = await visit(guard, ip, ua, path)
                got.append((d.action, d.rule_id, d.retry_after_header))
            outcomes.add(got[0][:2])
            if ip.startswith("203.0.113.1") and len(ip) == 13 and got[0][0] == "block":
                outcomes.add(("listener", "subnet-held"))  # escalation reached the listeners' /24
            if got[0] != got[1]:
                differences.append((n, ip, ua[:30], path, got))
        await redis_store.close()
        return differences, outcomes

    differences, outcomes = run(main())
    assert differences[:3] == []
    assert {("block", "track-sprint"), ("allow", None), ("listener", "subnet-held")} <= outcomes
    assert redis_store.stats.errors == 0


def test_explain_shows_the_scope_that_holds_a_new_user_agent(make_guard) -> None:
    from guard.ops.explain import explain, format_text
    from guard.sessions import SessionKeys
    from guard.sessions.service import Sessions

    guard, clock = make_guard()
    assert guard.sessions is not None
    sessions = Sessions(guard.sessions, SessionKeys.generate())

    def cookie(ua: str) -> list[tuple[bytes, bytes]]:
        """The cookie the device sends: explain reads its session the way the middleware does."""
        token = sessions.gate.codec.dumps(device_session("198.51.100.35", ua, issued_at=clock()))
        return [(b"cookie", f"guard_session={token}".encode())]

    async def main() -> None:
        await listen(guard, clock, "198.51.100.35", UAS[1], range(1, 2))
        banned = await scrape_until_banned(guard, clock, "198.51.100.35", UAS[0])
        new = await explain(
            guard,
            user_agent=UAS[2],
            ip="198.51.100.35",
            path="/api/tracks/0042",
            headers=cookie(UAS[2]),
            sessions=sessions,
        )
        assert new["decision"]["action"] == "block" and new["decision"]["rule"] == banned.rule_id
        sprint = next(r for r in new["rules"] if r["id"] == "track-sprint")["counter"]
        assert sprint["ban_scope"]["scope"] == "client" and sprint["ban_scope"]["user_agent_new_here"] is True
        assert new["path"]["track"] == "42" and new["path"]["track_raw"] == "0042"
        assert "spelled '0042'" in format_text(new)
        old = await explain(
            guard,
            user_agent=UAS[1],
            ip="198.51.100.35",
            path="/api/tracks/42",
            headers=cookie(UAS[1]),
            sessions=sessions,
        )
        assert old["decision"]["action"] == "allow"  # a device seen before the ban is not held
        sprint = next(r for r in old["rules"] if r["id"] == "track-sprint")["counter"]
        assert sprint["ban_scope"]["user_agent_new_here"] is False
        # explain counts nothing: the new User-Agent is still new (not recorded as seen).
        assert (await visit(guard, "198.51.100.35", UAS[2], "/api/tracks/42")).action == "block"
        await guard.store.close()

    run(main())


def test_the_decision_log_names_the_ban_scope_the_header_and_the_spelling(policy, caplog) -> None:
    import json
    import logging

    from support import Visitor

    from guard.demo.app import create_app

    caplog.set_level(logging.INFO, logger="guard.decisions")
    clock = FakeClock()
    app = create_app(policy, clock=clock, permissive=True, reload_interval=0, trusted_proxies=["10.0.0.0/8"])

    async def main() -> None:
        proxy = Visitor(app, "10.0.0.1", UAS[0])
        for n in range(1, 80):
            await proxy.get(f"/api/tracks/00{n}", headers={"x-forwarded-for": "203.0.113.50"})
            clock.advance(0.05)

    run(main())
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "guard.decisions"]
    last = records[-1]
    assert last["ban_scope"] == "client" and last["client_from"] == "x-forwarded-for"
    assert last["client"] == "203.0.113.50" and last["track"] == "79" and last["track_raw"] == "0079"


def test_a_held_newcomer_costs_one_round_trip_then_none(policy, redis_server, redis_url) -> None:
    store = RedisStore.from_url(redis_url, timeout=2.0)
    clock = FakeClock()
    guard = Guard(policy, store, clock=clock)
    admin = redis_server.client()

    def calls() -> int:
        stats = admin.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    async def main() -> None:
        await scrape_until_banned(guard, clock, "198.51.100.36", UAS[0])
        before = calls()
        for track in range(1, 6):
            assert (await visit(guard, "198.51.100.36", UAS[1], f"/api/tracks/{track}")).action == "block"
        assert calls() - before == 1  # the store says "held"; the ban is then known locally
        await store.close()

    run(main())


def test_an_address_remembers_its_user_agents_for_a_day_of_quiet(make_guard) -> None:
    guard, clock = make_guard()
    ip = "198.51.100.37"

    async def main() -> None:
        await listen(guard, clock, ip, UAS[1], range(1, 2))  # seen, then back within the day
        await listen(guard, clock, ip, UAS[2], range(1, 2))  # seen once, then a day of quiet
        clock.advance(23.5 * 3600)
        await listen(guard, clock, ip, UAS[1], range(2, 3))
        clock.advance(3600)  # the address was active 1 h ago, UAS[2] 24.5 h ago: still within a day
        await scrape_until_banned(guard, clock, ip, UAS[0])
        assert (await visit(guard, ip, UAS[1], "/api/tracks/5")).allowed
        assert (await visit(guard, ip, UAS[2], "/api/tracks/5")).allowed
        clock.advance(3600)  # the ban ends; later, a quiet day passes for the whole address
        clock.advance(25 * 3600)
        await scrape_until_banned(guard, clock, ip, UAS[0], first=500)
        assert (await visit(guard, ip, UAS[1], "/api/tracks/6")).action == "block"  # forgotten: new again
        await guard.store.close()

    run(main())


def test_an_ipv6_client_rotating_inside_its_64_stays_banned(make_guard) -> None:
    guard, clock = make_guard()

    async def main() -> None:
        banned = await scrape_until_banned(guard, clock, "2001:db8:7:1::10", UAS[0])
        for n, ua in enumerate(UAS[1:5], start=1):
            again = await visit(guard, f"2001:db8:7:1:{n:x}:{n * 3:x}::{n}", ua, "/api/tracks/4242")
            assert again.action == "block" and again.retry_after_header == banned.retry_after_header
        assert (await visit(guard, "2001:db8:7:2::10", UAS[1], "/api/tracks/4242")).allowed  # the next /64
        await guard.store.close()

    run(main())
