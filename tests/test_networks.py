"""Wider networks (/16, /48, /32), hosting providers' ranges and session keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import CHROME, RULES, run
from test_verification import range_server  # noqa: F401 (fixture)

from guard.identity.address import parse_ip
from guard.identity.ranges import HostingRanges, update_hosting_ranges
from guard.policy.engine import Guard
from guard.policy.rules import load_rules
from guard.sessions.tokens import Session
from guard.stores.memory import MemoryStore

HOSTING = RULES.parent / "ranges" / "hosting"
T0 = 1_800_000_000.0


def shipped_text(sessions: bool = True) -> str:
    """The shipped rules file, readable from anywhere; ``sessions=False`` turns its sessions off."""
    text = RULES.read_text().replace("catalogue: agents.yaml", f"catalogue: {RULES.parent / 'agents.yaml'}")
    return text if sessions else re.sub(r"\nsessions:\n(  .*\n|\s*\n)*", "\nsessions: null\n", text)


def policy_with(tmp_path: Path, rules: str, sessions: bool = True):
    """The shipped file with its rules replaced by ``rules`` (YAML list items)."""
    text = shipped_text(sessions)
    path = tmp_path / ("rules.yaml" if sessions else "no-sessions.yaml")
    path.write_text(text[: text.index("\nrules:")] + "\nrules:\n" + rules)
    return load_rules(path)


BUDGETS = """
  - id: v4-16-day
    match: {path: audio}
    limit: {key: v4/16, distinct: track, max: 20, per: 1d}
    action: throttle
  - id: v6-48-day
    match: {path: audio}
    limit: {key: v6/48, distinct: track, max: 20, per: 1d}
    action: throttle
  - id: v6-32-day
    match: {path: audio}
    limit: {key: v6/32, distinct: track, max: 30, per: 1d}
    action: throttle
  - id: hosting-day
    match: {path: audio}
    limit: {key: provider, distinct: track, max: 10, per: 1d}
    action: throttle
  - id: session-day
    match: {path: audio}
    limit: {key: session, distinct: track, max: 5, per: 1d}
    action: throttle
"""


def guard_for(policy) -> Guard:
    return Guard(policy, MemoryStore(), clock=lambda: T0, hosting=HostingRanges.from_directory(HOSTING))


def get(guard: Guard, ip: str, track: int, ua: str = CHROME, session: str | None = None, proven: bool = False):
    client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
    until = T0 + 2 * 86400 if proven else 0.0  # a solved challenge
    signed = Session(session, T0, state="page", proven_until=until) if session is not None else None
    facts = guard.facts(client, ua, f"/tracks/{track}/stream", session=signed)
    return run(guard.decide(facts))


def served(guard: Guard, requests) -> int:
    return sum(get(guard, *request).allowed for request in requests)


def test_rotating_over_many_24s_of_one_16_meets_the_16_budget(tmp_path) -> None:
    guard = guard_for(policy_with(tmp_path, BUDGETS))
    # Every track from a different /24 of 100.64.0.0/16 and a different browser session.
    got = served(guard, [(f"100.64.{n}.9", n, CHROME, f"s{n}") for n in range(200)])
    assert got == 20
    assert get(guard, "100.65.0.9", 1000, CHROME, "other").allowed  # the next /16 is another budget


def test_ipv6_rotation_across_a_48_and_across_a_32(tmp_path) -> None:
    guard = guard_for(policy_with(tmp_path, BUDGETS))
    # A new /64 (even a new /56) for every track, all inside 2001:db8:aa::/48.
    got = served(guard, [(f"2001:db8:aa:{n:x}00::1", n, CHROME, f"s{n}") for n in range(100)])
    assert got == 20
    # Spread over many /48s of one /32: the /32 budget (30) stops it after 10 more.
    got = served(guard, [(f"2001:db8:{n + 1:x}::1", 200 + n, CHROME, f"t{n}") for n in range(100)])
    assert got == 10


def test_an_ipv4_client_has_no_ipv6_levels_and_ordinary_networks_no_provider(tmp_path) -> None:
    guard = guard_for(policy_with(tmp_path, BUDGETS))
    client = guard.resolver.resolve({"client": ("198.51.100.7", 1), "headers": []})
    facts = guard.facts(client, CHROME, "/tracks/1/stream")
    plan = guard.policy.plan(*facts.plan_key)
    kept = [rule.id for rule in guard.limits_for(plan.limits, client)]
    assert kept == ["v4-16-day", "session-day", "canary"]  # canary: the shipped canary ban lookup
    assert client.networks == ((24, "198.51.100.0/24"), (16, "198.51.0.0/16")) and client.provider is None


def test_all_keys_of_a_request_share_the_widest_level_as_hash_tag(tmp_path) -> None:
    from redis.cluster import key_slot

    guard = guard_for(policy_with(tmp_path, BUDGETS))
    for ip in ("198.51.100.7", "2001:db8:aa:1::1", "3.5.140.2"):
        client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
        facts = guard.facts(client, CHROME, "/tracks/1/stream")
        plan = guard.policy.plan(*facts.plan_key)
        checks = guard.checks(facts, guard.limits_for(plan.limits, client))
        assert len({key_slot(c.key.encode()) for c in checks}) == 1
        assert checks[0].key.startswith(f"guard:{{{client.tag}}}:")
    assert guard.resolver.resolve({"client": ("3.5.140.2", 1)}).tag == "hosting:aws"
    assert guard.resolver.resolve({"client": ("2001:db8:aa:1::1", 1)}).tag == "2001:db8::/32"
    assert guard.resolver.resolve({"client": ("198.51.100.7", 1)}).tag == "198.51.0.0/16"


def test_a_data_centre_pool_shares_its_providers_budget(tmp_path) -> None:
    guard = guard_for(policy_with(tmp_path, BUDGETS))
    aws = ["3.5.140.2", "52.95.110.1", "18.180.0.9", "54.239.0.10", "13.248.0.5"]
    assert all(guard.resolver.resolve({"client": (ip, 1)}).provider == "aws" for ip in aws)
    got = served(guard, [(aws[n % len(aws)], n, CHROME, f"s{n}") for n in range(50)])
    assert got == 10
    assert get(guard, "104.131.0.1", 999, CHROME, "do").allowed  # DigitalOcean: its own budget


def test_sessions_behind_one_address_have_their_own_budgets(tmp_path) -> None:
    guard = guard_for(policy_with(tmp_path, BUDGETS))
    # A family: the same iPhone User-Agent, one address, four sessions: 5 tracks each.
    got = [served(guard, [("198.51.100.7", 100 * s + n, CHROME, f"phone{s}") for n in range(8)]) for s in range(4)]
    assert got == [5, 5, 5, 5]
    # Sessions off, the counter is the address and User-Agent (ip_ua): one budget for all of them.
    guard = guard_for(policy_with(tmp_path, BUDGETS, sessions=False))
    assert guard.sessions is None
    other = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    assert served(guard, [("203.0.113.8", 900 + n, other) for n in range(8)]) == 5
    assert served(guard, [("203.0.113.8", 950 + n, CHROME) for n in range(8)]) == 5  # another UA: another key


def test_shipped_hosting_snapshots_name_source_and_date() -> None:
    files = sorted(HOSTING.glob("*.json"))
    assert {f.stem for f in files} >= {"aws", "google-cloud", "microsoft-azure", "oracle-cloud", "digitalocean"}
    for file in files:
        doc = json.loads(file.read_text())
        assert doc["source"].startswith("https://") and len(doc["snapshot"]) == 10 and doc["prefixes"]
    ranges = HostingRanges.from_directory(HOSTING)
    for ip, provider in (("3.5.140.2", "aws"), ("129.146.0.1", "oracle-cloud"), ("104.131.0.1", "digitalocean")):
        assert ranges.provider(*parse_ip(ip)) == provider
    for ip in ("198.51.100.7", "192.0.2.1", "2001:db8::1", "81.2.69.142"):
        assert ranges.provider(*parse_ip(ip)) is None


def test_adjacent_ranges_of_two_providers_stay_apart() -> None:
    ranges = HostingRanges({"a": ["10.0.0.0/24", "10.0.1.0/24"], "b": ["10.0.2.0/24", "10.0.0.128/25"]})
    assert [ranges.provider(4, parse_ip(ip)[1]) for ip in ("10.0.0.200", "10.0.1.255", "10.0.2.0", "10.0.3.0")] == [
        "a",
        "a",
        "b",
        None,
    ]


def test_update_hosting_ranges_from_json_and_csv_feeds(tmp_path, range_server) -> None:  # noqa: F811
    served_dir, base = range_server
    (served_dir / "cloud.json").write_text(
        json.dumps({"prefixes": [{"ip_prefix": "198.18.0.0/24"}, {"ipv6_prefix": "2001:db8:f::/48"}]})
    )
    (served_dir / "geo.csv").write_text("# geofeed\n198.18.8.0/23,NL,,,\n198.18.10.0/23,NL,,,\n")
    (served_dir / "broad.json").write_text(json.dumps({"prefixes": ["0.0.0.0/2"]}))
    folder = tmp_path / "hosting"
    folder.mkdir()
    for name, url in (("cloud", "cloud.json"), ("feed", "geo.csv"), ("broad", "broad.json"), ("gone", "none.json")):
        doc = {"provider": name, "source": f"{base}/{url}", "snapshot": "2025-01-01", "prefixes": ["192.0.2.0/24"]}
        (folder / f"{name}.json").write_text(json.dumps(doc))

    report = update_hosting_ranges(folder, timeout=5, log=lambda line: None)

    assert report["cloud"] == "updated: 2 prefixes"
    assert report["feed"] == "updated: 1 prefixes"  # the two /23s collapse into one /22
    assert report["broad"].startswith("kept: ValueError: implausibly broad")
    assert report["gone"].startswith("kept: HTTPError")
    assert json.loads((folder / "feed.json").read_text())["prefixes"] == ["198.18.8.0/22"]
    assert json.loads((folder / "broad.json").read_text())["prefixes"] == ["192.0.2.0/24"]


@pytest.mark.parametrize("key", ["v4/33", "v5/16", "v4/016", "v6/0", "network"])
def test_bad_network_level_keys_are_refused_with_their_line(tmp_path, key) -> None:
    from guard.errors import ConfigError

    rules = f"  - id: bad\n    limit: {{key: {key}, requests: 1, per: 1m}}\n    action: throttle\n"
    with pytest.raises(ConfigError, match="network level like v4/16"):
        policy_with(tmp_path, rules)


def day_of(guard: Guard, clock: list[float], ip: str, sid: str | None, pace: float, ua: str = CHROME) -> int:
    """A scraper walking tracks for a day at ``pace``, waiting out every Retry-After: tracks obtained."""
    got, track = 0, 1
    end = clock[0] + 86400
    while clock[0] < end:
        decision = get(guard, ip, track, ua, sid)
        if decision.allowed:
            got += 1
            track += 1
            clock[0] += pace
        else:
            assert decision.retry_after is not None and decision.retry_after > 0
            clock[0] += max(pace, decision.retry_after)
    return got


def shipped_guard(clock: list[float], rules: Path = RULES) -> Guard:
    hosting = HostingRanges.from_directory(HOSTING)
    return Guard(load_rules(rules), MemoryStore(), clock=lambda: clock[0], hosting=hosting)


def test_the_shipped_rules_give_a_scraper_keeping_one_session_300_tracks_a_day(tmp_path) -> None:
    clock = [T0 - T0 % 86400]
    guard = shipped_guard(clock)
    assert 285 <= day_of(guard, clock, "198.51.100.7", "one-session", 10) <= 300  # 290, HyperLogLog: about 1%
    # Without a session (no cookies) there is no audio at all.
    assert get(guard, "198.51.100.8", 1).action == "challenge"
    # With sessions off, the budget is the address and User-Agent's: the same.
    (tmp_path / "no-sessions.yaml").write_text(shipped_text(sessions=False))
    clock[0] = T0 - T0 % 86400
    guard = shipped_guard(clock, tmp_path / "no-sessions.yaml")
    assert guard.sessions is None
    assert 285 <= day_of(guard, clock, "198.51.100.8", None, 10) <= 300


def test_the_shipped_rules_never_stop_an_office_of_30_on_one_address() -> None:
    clock = [T0 - T0 % 86400 + 9 * 3600]
    guard = shipped_guard(clock)
    refused = 0
    for minute in range(8 * 60 // 4):  # 8 hours, a new track every 4 minutes for each of the 30
        for person in range(30):
            track = 1 + (person * 7919 + minute * 104729) % 100_000
            refused += not get(guard, "198.51.100.50", track, CHROME, f"desk{person}").allowed
        clock[0] += 240
    assert refused == 0


def test_a_network_has_a_budget_of_sessions_too(tmp_path) -> None:
    rules = """
  - id: address-sessions
    match: {path: audio}
    limit: {key: ip, distinct: session, max: 3, per: 1d}
    action: throttle
"""
    guard = guard_for(policy_with(tmp_path, rules))
    # A new session for every track (what a scraper rotating sessions does): three are let in.
    assert [get(guard, "198.51.100.9", n, CHROME, f"fresh{n}").allowed for n in range(6)] == [True] * 3 + [False] * 3
    # The sessions already counted keep listening.
    assert all(get(guard, "198.51.100.9", 100 + n, CHROME, f"fresh{n % 3}").allowed for n in range(30))
    # Sessions off, each User-Agent of an address is a session.
    guard = guard_for(policy_with(tmp_path, rules, sessions=False))
    assert get(guard, "198.51.100.10", 1, CHROME).allowed and get(guard, "198.51.100.10", 2, CHROME).allowed
    uas = [f"{CHROME} r{n}" for n in range(5)]
    assert [get(guard, "198.51.100.10", 3, ua).allowed for ua in uas] == [True, True, False, False, False]
    assert "3 distinct sessions per 1d per ip" in get(guard, "198.51.100.10", 4, uas[4]).reason


def test_rules_match_hosting_networks_and_explain_says_why(tmp_path) -> None:
    from guard.ops.explain import explain

    rules = """
  - id: data-centre-audio
    match: {path: audio, network: hosting}
    action: block
    reason: audio is not served to data centres
"""
    guard = guard_for(policy_with(tmp_path, rules))
    assert not get(guard, "3.5.140.2", 1).allowed and get(guard, "3.5.140.2", 1).rule_id == "data-centre-audio"
    assert get(guard, "198.51.100.7", 1, CHROME, "a-listener").allowed
    report = run(explain(guard, user_agent=CHROME, ip="198.51.100.7", path="/tracks/1/stream"))
    line = next(r for r in report["rules"] if r["id"] == "data-centre-audio")
    assert line["result"] == "no match: the address is not in a hosting provider's ranges, rule wants network hosting"
    report = run(explain(guard, user_agent=CHROME, ip="3.5.140.2", path="/tracks/1/stream"))
    assert report["decision"]["rule"] == "data-centre-audio" and report["client"]["hosting"] == "aws"


def test_a_scraper_cannot_start_over_with_a_new_session_on_its_address() -> None:
    """A session that spends its budget is banned and holds its address: a fresh session there
    inherits the ban; sessions seen there before go on; a second banned session bans the address."""
    clock = [T0 - T0 % 86400]
    guard = shipped_guard(clock)
    ip = "198.51.100.40"
    assert get(guard, ip, 1, CHROME, "colleague").allowed  # another person's session, seen here first
    assert get(guard, ip, 2, CHROME, "early-bird").allowed  # a scraper's second session, seeded early
    got = 0
    for track in range(100, 400):
        decision = get(guard, ip, track, CHROME, "scraper", proven=True)  # it solves the challenges
        clock[0] += 10
        if not decision.allowed:
            break
        got += 1
    assert got == 200 and decision.action == "block" and decision.rule_id == "session-hour"
    fresh = get(guard, ip, 500, CHROME, "fresh-jar")  # the same browser, a new cookie jar
    assert fresh.action == "block" and fresh.retry_after == decision.retry_after - 10
    assert get(guard, ip, 501, CHROME, "colleague").allowed  # seen before the ban: goes on
    for track in range(600, 900):  # the seeded session spends its budget too...
        if not get(guard, ip, track, CHROME, "early-bird", proven=True).allowed:
            break
        clock[0] += 10
    after = get(guard, ip, 901, CHROME, "colleague")  # ...and two banned sessions ban the address
    assert after.action == "block" and "banned" in after.reason


def test_audio_under_a_prefix_without_a_track_counts_each_file_as_a_track() -> None:
    """/audio/... names no {track}: each file is counted by its path, so walking the files meets
    the same limits and budgets as walking track ids."""
    clock = [T0 - T0 % 86400]
    guard = shipped_guard(clock)
    client = guard.resolver.resolve({"client": ("198.51.100.44", 1), "headers": []})
    session = Session("walker", T0, state="page", proven_until=T0 + 2 * 86400)
    served = 0
    for n in range(1000):
        facts = guard.facts(client, CHROME, f"/audio/{n}.mp3", session=session)
        served += run(guard.decide(facts)).allowed
        clock[0] += 10
    assert 195 <= served <= 205  # session-hour's 200 (HyperLogLog: about 1%), then the session's ban
