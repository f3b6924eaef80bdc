"""``guard update-agents`` end to end: the real command against a loopback HTTP server that
serves fixture copies of ai.robots.txt's robots.json (and broken ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import DATA, ROOT

from guard.identity.catalogue import load_catalogue
from guard.identity.sync import category_for, diff, operator_name, parse_snapshot, read_snapshot, ua_token

FIXTURES = DATA / "sync"

CURATED = """\
synced: ai-robots.json
categories:
  ai_training: trains models
  ai_search: AI search
  ai_assistant: fetches for a user
agents:
  # Curated by hand: a category that differs from what upstream's function maps to, an
  # extra User-Agent token, and an example. A sync must keep all of it.
  - {name: FindItBot, operator: FindIt Inc, category: ai_search, ua: [FindItBot, FindIt-Index],
     example: "Mozilla/5.0 (compatible; FindItBot/2.0; +https://findit.example/bot)"}
  # A local addition upstream does not list: kept across syncs.
  - {name: LocalOnlyBot, operator: somebody, category: ai_training}
"""
RULES = """\
version: 1
catalogue: agents.yaml
paths: {pages: [/]}
rules: []
"""


class Upstream:
    """What the fake upstream answers: a status and a body, changed by each test."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""

    def serve(self, name: str) -> None:
        self.status, self.body = 200, (FIXTURES / name).read_bytes()


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/robots.json"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "agents.yaml").write_text(CURATED)
    first = parse_snapshot((FIXTURES / "robots-v1.json").read_text())
    (tmp_path / "ai-robots.json").write_text(json.dumps({"source": "fixture", "fetched": "-", "agents": first}))
    return tmp_path


def update_agents(site: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "guard", "update-agents", "--rules", str(site / "rules.yaml"), "--url", url]
    return subprocess.run([*command, *extra], capture_output=True, text=True, env=env, timeout=60)


def test_a_sync_adds_removes_and_reports(site: Path, upstream) -> None:
    state, url = upstream
    state.serve("robots-v2.json")
    done = update_agents(site, url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "added   FreshBot (ai_training)" in lines
    assert "removed OldCrawler" in lines
    assert "changed AskThing-User: operator, description" in lines
    assert "changed FindItBot: function, description" in lines
    assert "5 agents: 1 added, 1 removed, 2 changed" in lines

    snapshot = read_snapshot(site / "ai-robots.json")
    assert snapshot.source == url and set(snapshot.agents) == set(json.loads((FIXTURES / "robots-v2.json").read_text()))
    catalogue = load_catalogue(site / "agents.yaml")
    fresh = catalogue.by_name("FreshBot")
    assert fresh is not None and fresh.synced and fresh.category == "ai_training" and fresh.operator == "Fresh Labs"
    assert catalogue.by_name("OldCrawler") is None
    hit = catalogue.match("Mozilla/5.0 (compatible; FreshBot/0.3; +https://fresh.example/bot)")
    assert hit is not None and hit.agent.name == "FreshBot"


def test_a_sync_keeps_every_hand_edit(site: Path, upstream) -> None:
    state, url = upstream
    state.serve("robots-v2.json")
    before = (site / "agents.yaml").read_text()
    assert update_agents(site, url).returncode == 0
    assert (site / "agents.yaml").read_text() == before  # the curated file is never written
    catalogue = load_catalogue(site / "agents.yaml")
    curated = catalogue.by_name("FindItBot")
    # Upstream now says "AI Assistants"; the curated category, tokens and example stand.
    assert curated is not None and not curated.synced
    assert (curated.category, curated.ua_tokens) == ("ai_search", ("FindItBot", "FindIt-Index"))
    assert curated.example and "FindItBot/2.0" in curated.example
    assert [a.name for a in catalogue.agents].count("FindItBot") == 1
    local = catalogue.by_name("LocalOnlyBot")
    assert local is not None and not local.synced


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (500, b"oops", "HTTP 500"),
        (200, b"<html>maintenance</html>", "not JSON"),
        (200, b"[]", "not a JSON object of named agents"),
        (200, json.dumps({"OnlyOne": {"operator": "x"}}).encode(), "lacks"),
        # Parses, but lists far fewer agents than before: a truncated file.
        (
            200,
            json.dumps(
                {"A": dict.fromkeys(("operator", "respect", "function", "frequency", "description"), "x")}
            ).encode(),
            "truncated",
        ),
        # A name no User-Agent could carry.
        (
            200,
            json.dumps(
                {"bad\nname": dict.fromkeys(("operator", "respect", "function", "frequency", "description"), "x")}
            ).encode(),
            "unusable",
        ),
    ],
)
def test_a_broken_upstream_keeps_the_last_good_file(site: Path, upstream, status: int, body: bytes, why: str) -> None:
    state, url = upstream
    state.status, state.body = status, body
    before = (site / "ai-robots.json").read_bytes()
    done = update_agents(site, url)
    assert done.returncode == 1
    assert done.stderr.startswith("guard: error: ") and why in done.stderr and "kept" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert (site / "ai-robots.json").read_bytes() == before
    assert not [p for p in site.iterdir() if p.name.endswith(".tmp")]


def test_an_unreachable_upstream_keeps_the_last_good_file(site: Path) -> None:
    before = (site / "ai-robots.json").read_bytes()
    done = update_agents(site, "http://127.0.0.1:9/robots.json", "--timeout", "2")  # discard port: refused
    assert done.returncode == 1 and "kept" in done.stderr
    assert (site / "ai-robots.json").read_bytes() == before


def test_dry_run_reports_and_writes_nothing(site: Path, upstream) -> None:
    state, url = upstream
    state.serve("robots-v2.json")
    before = (site / "ai-robots.json").read_bytes()
    done = update_agents(site, url, "--dry-run")
    assert done.returncode == 0 and "added   FreshBot (ai_training)" in done.stdout and "would write" in done.stdout
    assert (site / "ai-robots.json").read_bytes() == before


def test_the_shipped_snapshot_is_dated_and_sourced() -> None:
    snapshot = read_snapshot(ROOT / "rules" / "ai-robots.json")
    assert snapshot.source.endswith("ai.robots.txt/main/robots.json")
    assert snapshot.fetched.startswith("2026-") and "2026-08-22" in snapshot.note
    assert len(snapshot.agents) >= 166


@pytest.mark.parametrize(
    ("function", "category"),
    [
        ("AI Search Crawlers", "ai_search"),
        ("Search result generation.", "ai_search"),
        ("AI Assistants", "ai_assistant"),
        ("Undocumented AI Agents", "ai_assistant"),
        ("AI Coding Agents", "ai_assistant"),
        ("Retrieves data to provide responses to user-initiated prompts.", "ai_assistant"),
        ("AI Data Scrapers", "ai_training"),
        ("AI Data Providers", "ai_training"),
        ("Unclear at this time.", "ai_training"),
    ],
)
def test_function_maps_to_a_category(function: str, category: str) -> None:
    assert category_for(function) == category


def test_upstream_text_is_cleaned() -> None:
    assert operator_name("[OpenAI](https://openai.com)") == "OpenAI"
    assert operator_name("Unclear at this time.") == "unknown"
    assert operator_name("[Google](https://g.example) that fetches for Gemini users") == "Google"
    assert ua_token("iaskspider/2.0") == "iaskspider"
    assert ua_token("Brightbot 1.0") == "Brightbot"
    assert ua_token("Google-Extended") == "Google-Extended"


def test_diff_names_the_changed_fields() -> None:
    old = {"A": {"operator": "x", "function": "f"}, "B": {"operator": "y", "function": "f"}}
    new = {"A": {"operator": "x", "function": "g"}, "C": {"operator": "z", "function": "f"}}
    report = diff(old, new)
    assert (report.added, report.removed, report.changed) == (["C"], ["B"], {"A": ["function"]})
