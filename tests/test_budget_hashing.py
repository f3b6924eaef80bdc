"""Budgets hash what they count under a secret key: a scraper that knows the sketches' public
hash (Redis's MurmurHash64A) cannot pick tracks that fall into a handful of registers."""

from __future__ import annotations

import httpx
from support import CHROME, ROOT, FakeClock, serving

from guard.demo.app import create_app
from guard.middleware import budget_key
from guard.policy.rules import load_rules
from guard.stores.hll import register_of

RULES = f"""version: 1
catalogue: {ROOT / "rules" / "agents.yaml"}
paths:
  content_api: ["/api/tracks/{{track}}"]
rules:
  - id: day-budget
    match: {{path: content_api}}
    limit: {{key: ip_ua, distinct: track, max: 50, per: 1d}}
    action: throttle
"""


def test_tracks_chosen_by_their_hyperloglog_register_are_counted_as_tracks(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    app = create_app(load_rules(rules), clock=FakeClock(), trusted_proxies=["127.0.0.1/32"])
    chosen = [t for t in range(1, 100_001) if register_of(str(t))[0] < 40][:200]  # the demo has 100,000
    with serving(app) as base:

        def served(tracks: list[int], ip: str) -> int:
            headers = {"user-agent": CHROME, "x-forwarded-for": ip}
            return sum(httpx.get(f"{base}/api/tracks/{t}", headers=headers).status_code == 200 for t in tracks)

        assert served(list(range(1, 201)), "198.51.100.60") <= 52  # walking the catalogue: stopped at ~50
        assert served(chosen, "198.51.100.61") <= 52  # unkeyed, all 200 were served


def test_the_budget_key_comes_from_the_environment_else_random_for_one_process(monkeypatch, caplog) -> None:
    monkeypatch.setenv("GUARD_BUDGET_KEY", "a shared secret")
    shared = budget_key(object())  # a shared store: every instance derives the same key from the secret
    assert shared is not None and shared == budget_key(object())
    monkeypatch.delenv("GUARD_BUDGET_KEY")
    assert budget_key(None) != budget_key(None)  # the embedded store: random, one process
    assert budget_key(object()) is None  # a shared store without the secret: the public fallback, and a warning
    assert any("GUARD_BUDGET_KEY" in r.getMessage() for r in caplog.records)
