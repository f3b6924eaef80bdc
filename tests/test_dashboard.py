"""The Grafana dashboard (deploy/grafana/guard.json) queries only metrics guard exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, RULES, FakeClock

from guard.consent.model import ArtistConsent
from guard.consent.settings import ConsentSettings
from guard.demo.app import create_app
from guard.stores.redis import RedisStore, redis_client

DASHBOARD = ROOT / "deploy" / "grafana" / "guard.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def exported_series(tmp_path: Path) -> set[str]:
    """Every series name a fully equipped middleware exports: Redis store health and consent included."""

    async def lookup(artist: str) -> ArtistConsent:
        return ArtistConsent(artist, ())

    files = {"ledger": str(tmp_path / "ledger.jsonl"), "licence_key": str(tmp_path / "key.json")}
    settings = ConsentSettings(source="app", **files)
    store = RedisStore(redis_client("redis://127.0.0.1:1/0"))  # never connected: only its stats are read
    app = create_app(RULES, store=store, clock=FakeClock(), consent=settings, consent_lookup=lookup)
    names = set()
    for family in text_string_to_metric_families(generate_latest(app.observer.registry).decode()):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def queries(dashboard: dict) -> list[str]:
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def test_every_query_names_a_metric_guard_exports(tmp_path: Path) -> None:
    exported = exported_series(tmp_path)
    dashboard = json.loads(DASHBOARD.read_text())
    named = {name for expr in queries(dashboard) for name in re.findall(r"\bguard_[a-z0-9_]+", expr)}
    assert named, "no query names a guard metric"
    assert named <= exported, f"not exported: {sorted(named - exported)}"


def test_the_dashboard_shows_decisions_latency_fail_open_time_challenges_and_licensed_access(tmp_path: Path) -> None:
    text = " ".join(queries(json.loads(DASHBOARD.read_text())))
    for metric in (
        "guard_decisions_total",
        "guard_check_seconds_bucket",
        "guard_store_down_seconds_total",
        "guard_store_errors_total",
        "guard_consent_requests_total",
    ):
        assert metric in text
    for label in ("by (rule", "by (category)", "by (usage, outcome)", 'action="challenge"'):
        assert label in text
