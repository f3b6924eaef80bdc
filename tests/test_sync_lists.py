"""``guard update-agents`` syncs the public crawler lists too: the real command against a
loopback server serving fixture copies of crawler-user-agents.json and well-known-bots.json."""

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
from guard.identity.crawlerlists import category_of, pattern_token, read_lists
from guard.identity.sync import parse_snapshot

FIXTURES = DATA / "sync"
CURATED = """\
synced: ai-robots.json
crawler_lists: crawler-lists.json
not_synced:
  FeedMuncher: a test of leaving a listed name out
categories:
  ai_training: trains models
  ai_search: AI search
  ai_assistant: fetches for a user
  social_preview: link previews
  scraping_tool: tools
  seo: seo
  monitoring: monitors
  archiver: archives
  crawler: listed crawlers
agents:
  # Curated: wins over the lists' entry of the same token.
  - {name: Googlebot, operator: Google, category: ai_search}
"""
RULES = "version: 1\ncatalogue: agents.yaml\npaths: {pages: [/]}\nrules: []\n"


@pytest.fixture
def upstream() -> Iterator[dict[str, tuple[int, bytes]]]:
    answers = {
        "/cua.json": (200, (FIXTURES / "crawler-user-agents.json").read_bytes()),
        "/wkb.json": (200, (FIXTURES / "well-known-bots.json").read_bytes()),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(self.path, (404, b"{}"))
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answers["base"] = (0, f"http://127.0.0.1:{server.server_address[1]}".encode())
    try:
        yield answers
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "agents.yaml").write_text(CURATED)
    first = parse_snapshot((FIXTURES / "robots-v1.json").read_text())
    (tmp_path / "ai-robots.json").write_text(json.dumps({"source": "fixture", "fetched": "-", "agents": first}))
    (tmp_path / "crawler-lists.json").write_text(json.dumps({"sources": {}, "agents": {}}))
    return tmp_path


def update(site: Path, answers: dict, *extra: str) -> subprocess.CompletedProcess:
    base = answers["base"][1].decode()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "guard", "update-agents", "--rules", str(site / "rules.yaml")]
    command += ["--url", f"{base}/robots.json"]
    command += ["--crawler-user-agents-url", f"{base}/cua.json", "--well-known-bots-url", f"{base}/wkb.json"]
    return subprocess.run([*command, *extra], capture_output=True, text=True, env=env, timeout=60)


def test_a_sync_brings_every_listed_crawler_with_its_category(site: Path, upstream) -> None:
    upstream["/robots.json"] = (200, (FIXTURES / "robots-v1.json").read_bytes())
    done = update(site, upstream)
    assert done.returncode == 0, done.stderr
    assert "added   SnapURLPreview (social_preview)" in done.stdout.splitlines()
    snapshot = read_lists(site / "crawler-lists.json")
    assert snapshot.sources["crawler-user-agents"]["url"].endswith("/cua.json")
    catalogue = load_catalogue(site / "agents.yaml")
    by_ua = {ua: catalogue.match(ua) for ua in ("Chatwork LinkPreview v1", "Gluttony/1.0", "TunesHoover/0.1")}
    assert {ua: hit.agent.category if hit else None for ua, hit in by_ua.items()} == {
        "Chatwork LinkPreview v1": "social_preview",
        "Gluttony/1.0": "scraping_tool",
        "TunesHoover/0.1": "ai_training",
    }
    unfurl = catalogue.match("GroupChatUnfurl/2.0")
    assert unfurl is not None and unfurl.agent.name == "groupchat-preview" and unfurl.agent.listed
    googlebot = catalogue.match("Googlebot/2.1 (+http://www.google.com/bot.html)")
    assert googlebot is not None and not googlebot.agent.listed  # the curated entry wins
    assert catalogue.by_name("FeedMuncher") is None  # left out by not_synced
    assert catalogue.by_name("regex-only") is None  # a real expression is no token


def test_a_broken_list_keeps_the_last_good_file(site: Path, upstream) -> None:
    upstream["/robots.json"] = (200, (FIXTURES / "robots-v1.json").read_bytes())
    before = (site / "crawler-lists.json").read_text()
    upstream["/wkb.json"] = (200, b"<html>not json</html>")
    done = update(site, upstream)
    assert done.returncode != 0 and "not JSON" in done.stderr and "Traceback" not in done.stderr
    assert (site / "crawler-lists.json").read_text() == before


def test_dry_run_writes_nothing(site: Path, upstream) -> None:
    upstream["/robots.json"] = (200, (FIXTURES / "robots-v1.json").read_bytes())
    before = (site / "crawler-lists.json").read_text()
    done = update(site, upstream, "--dry-run")
    assert done.returncode == 0 and "would write" in done.stdout
    assert (site / "crawler-lists.json").read_text() == before


@pytest.mark.parametrize(
    ("pattern", "token"),
    [
        ("BingPreview\\/", "BingPreview"),
        ("^Apache-HttpClient", "Apache-HttpClient"),
        ("[pP]ingdom", "pingdom"),
        ("pinterest\\.com\\/bot", "pinterest.com/bot"),
        ("(sistrix|SISTRIX) [cC]rawler", None),
        ("Spider[\\s\\S]*spider\\.com", None),
        ("GoogleAssociationService$", "GoogleAssociationService"),
    ],
)
def test_patterns_become_tokens_only_when_plain(pattern: str, token: str | None) -> None:
    assert pattern_token(pattern) == token


def test_tags_map_to_categories() -> None:
    assert category_of(["social-preview", "ai-crawler"]) == "social_preview"
    assert category_of(["ai-crawler", "search-engine"]) == "ai_training"
    assert category_of(["scanner"]) == "scraping_tool"
    assert category_of(["search-engine"]) == category_of([]) == "crawler"


def test_the_shipped_snapshot_is_sourced_and_broad() -> None:
    snapshot = read_lists(ROOT / "rules" / "crawler-lists.json")
    assert set(snapshot.sources) == {"crawler-user-agents", "well-known-bots"}
    assert len(snapshot.agents) > 1500
    assert sum(a.category == "social_preview" for a in snapshot.agents.values()) >= 76
