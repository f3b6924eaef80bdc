"""Limits keyed ``agent``: one bot name counted across the whole platform, whatever address it
comes from, with the same decisions from the memory store and from Redis (a Redis Cluster
needs all of a request's keys in one slot: they share the agent's hash tag)."""

from __future__ import annotations

import sys

import pytest
from support import FakeClock
from test_networks import policy_with

from guard.policy.engine import Guard

RULES = """
  - id: bot-titles
    match: {category: unknown_bot, path: pages}
    limit: {key: agent, distinct: track, max: 5, per: 1d}
    action: block
  - id: per-browser
    match: {path: pages}
    limit: {key: ip_ua, requests: 100, per: 1m}
    action: throttle
"""


@pytest.fixture(autouse=True)
def _one_loop(monkeypatch: pytest.MonkeyPatch, one_loop) -> None:
    monkeypatch.setattr(sys.modules[__name__], "run", one_loop)


def run(coro):  # replaced by the one-loop runner above
    raise AssertionError


def decide(guard: Guard, ip: str, ua: str, path: str):
    client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
    return run(guard.decide(guard.facts(client, ua, path)))


def test_a_bot_name_is_counted_across_addresses_in_both_stores(tmp_path, make_store) -> None:
    guard = Guard(policy_with(tmp_path, RULES, sessions=False), make_store(), clock=FakeClock())
    bot = "Mozilla/5.0 (compatible; TitleSnatchBot/1.0; +https://snatch.example/bot)"
    # Each page from a new /24: per address, nothing adds up; per name, everything does.
    got = [decide(guard, f"10.{n}.0.1", bot, f"/tracks/{n}").action for n in range(1, 9)]
    assert got == ["allow"] * 5 + ["block"] * 3
    # The same bot spelt otherwise is the same name (folded); another name has its own budget.
    assert decide(guard, "10.50.0.1", bot.replace("TitleSnatchBot", "TITLESNATCHBOT"), "/tracks/40").action == "block"
    other = "Mozilla/5.0 (compatible; OtherBot/1.0)"
    assert [decide(guard, f"10.60.{n}.1", other, f"/tracks/{n}").action for n in range(1, 4)] == ["allow"] * 3
    # A browser is never counted under a bot's name.
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    assert all(decide(guard, "10.70.0.1", chrome, f"/tracks/{n}").allowed for n in range(1, 9))


def _keys(guard: Guard, ua: str) -> dict[str, str]:
    """A page request's store keys by rule, as ``ua`` from 10.1.0.1."""
    client = guard.resolver.resolve({"client": ("10.1.0.1", 1), "headers": []})
    facts = guard.facts(client, ua, "/tracks/3")
    plan = guard.policy.plan(*facts.plan_key)
    return {check.key.split("}:", 1)[1].split(":", 1)[0]: check.key for check in guard.checks(facts, plan.limits)}


def test_an_agent_count_has_its_own_hash_tag_and_the_clients_counts_keep_theirs(tmp_path) -> None:
    """The agent's count follows the name across the platform; the address's counts stay the
    address's, so a new invented name never starts them afresh (tests/test_red_team_identity.py)."""
    from guard.stores.memory import MemoryStore

    guard = Guard(policy_with(tmp_path, RULES, sessions=False), MemoryStore(), clock=FakeClock())
    keys = _keys(guard, "Mozilla/5.0 (compatible; TitleSnatchBot/1.0)")
    other = _keys(guard, "Mozilla/5.0 (compatible; OtherNameBot/1.0)")
    assert keys["bot-titles"].endswith(":bot-titles:agent:n:tltlesnatchbot"), keys
    assert keys["bot-titles"].split("}")[0] != keys["per-browser"].split("}")[0]  # its own slot
    assert other["bot-titles"] != keys["bot-titles"]
    assert other["per-browser"].split("}")[0] == keys["per-browser"].split("}")[0]  # the client's tag


def test_on_a_cluster_an_agents_count_stays_in_the_requests_slot(tmp_path) -> None:
    """A cluster runs one script call in one slot: there the agent is counted under the client's tag."""
    from guard.stores.memory import MemoryStore

    class ClusterLike(MemoryStore):
        cluster = True

    guard = Guard(policy_with(tmp_path, RULES, sessions=False), ClusterLike(), clock=FakeClock())
    keys = _keys(guard, "Mozilla/5.0 (compatible; TitleSnatchBot/1.0)")
    assert len({key.split("}")[0] for key in keys.values()}) == 1, keys
