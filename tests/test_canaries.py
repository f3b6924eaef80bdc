"""Canaries through real HTTP: a scraper that follows baited links or walks into the canary
range gets a decoy and is banned across its session, address and network (memory and Redis);
a browser and a crawler that obeys robots.txt never fetch one."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from protego import Protego
from support import CHROME, DATA, FakeClock, Site, serving

from guard.canaries.ids import CanaryIds, derive_ids
from guard.demo.app import platform
from guard.middleware import DEFAULT_RULES, GuardMiddleware
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore
from guard.testing import demo_process

KEY = "canary test key"


@pytest.fixture(params=["memory", "redis"])
def site(request, monkeypatch) -> Iterator[Site]:
    monkeypatch.setenv("GUARD_CANARY_KEY", KEY)
    clock = FakeClock()
    store = RedisStore.from_url(request.getfixturevalue("redis_url")) if request.param == "redis" else MemoryStore()
    app = GuardMiddleware(platform(), DEFAULT_RULES, store=store, trusted_proxies=["127.0.0.1/32"], clock=clock)
    with serving(app) as base:
        yield Site(base, clock, app)


def bait_urls(site: Site) -> list[str]:
    sitemap = httpx.get(site.base + "/sitemap-archive.xml").text
    return [re.sub(r"^https?://[^/]*", "", u) for u in re.findall(r"<loc>([^<]+)</loc>", sitemap)]


def test_robots_txt_disallows_every_bait(site: Site) -> None:
    robots = Protego.parse(httpx.get(site.base + "/robots.txt").text)
    urls = bait_urls(site)
    assert len(urls) == 16
    for agent in ("Scrapy/2.11", "Googlebot", "SomePoliteCrawler/1.0"):
        assert not robots.can_fetch(site.base + "/sitemap-archive.xml", agent)
        assert not any(robots.can_fetch(site.base + u, agent) for u in urls), agent
    assert robots.can_fetch(site.base + "/tracks/7", "SomePoliteCrawler/1.0")  # pages stay open


def test_a_scraper_following_bait_gets_a_decoy_then_is_banned_everywhere(site: Site) -> None:
    scraper = site.browser(ip="203.0.113.9")
    assert scraper.page("/tracks/7").status_code == 200  # a session, like a browser
    url = bait_urls(site)[0]
    decoy = scraper.get(url)
    assert decoy.status_code == 200 and decoy.headers["content-type"] == "application/json"
    doc = decoy.json()
    assert doc["id"] == int(url.rsplit("/", 1)[1]) and doc["title"] and doc["duration"] >= 150
    assert site.app.canaries.hits == 1
    # The same session, the same address with a new User-Agent, a neighbour in its /24.
    assert scraper.page("/tracks/8").status_code == 403
    assert scraper.get("/tracks/8", user_agent=CHROME.replace("Chrome/", "Chrome/9")).status_code == 403
    neighbour = site.browser(ip="203.0.113.77")
    refused = neighbour.page("/tracks/8")
    assert refused.status_code == 403 and "canary" in refused.text
    # Another network is untouched. The network's ban ends first, then the address's; the
    # session's lasts the day.
    assert site.browser(ip="198.51.100.20").page("/tracks/8").status_code == 200
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    site.clock.advance(601)
    assert site.browser(ip="203.0.113.78").page("/tracks/8").status_code == 200
    assert site.browser(user_agent=firefox, ip="203.0.113.9").page("/tracks/8").status_code == 403
    site.clock.advance(3000)
    assert site.browser(user_agent=firefox, ip="203.0.113.9").page("/tracks/8").status_code == 200
    assert scraper.page("/tracks/9").status_code == 403
    site.clock.advance(86400 - 3601 + 1)
    assert scraper.page("/tracks/9").status_code == 200


def test_decoy_audio_is_a_believable_wav(site: Site) -> None:
    track = bait_urls(site)[0].rsplit("/", 1)[1]
    scraper = site.browser(ip="203.0.113.10")
    response = scraper.get(f"/tracks/{track}/stream")
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    body = response.content
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    rate = struct.unpack("<I", body[24:28])[0]
    seconds = (len(body) - 44) / rate
    assert 150 <= seconds <= 270 and len(set(body[44:4044])) > 20  # minutes of sound, not silence
    again = site.browser(ip="198.51.100.30").get(f"/tracks/{track}/stream")
    assert again.content == body  # deterministic: the same canary always sounds the same


def test_a_listener_browsing_never_meets_a_canary(site: Site) -> None:
    listener = site.browser(ip="192.0.2.44")
    trap = site.app.canaries
    for path in ("/", "/tracks/7", "/tracks/8"):
        page = listener.page(path)
        assert page.status_code == 200
        for link in re.findall(r'href="([^"]+)"', page.text):
            assert not any(trap.is_canary(part) for part in link.split("/")), link
    assert trap.hits == 0


def test_the_challenge_page_hides_its_bait(site: Site) -> None:
    bot = site.browser(ip="203.0.113.40")
    page = bot.get("/tracks/7/stream", **{"sec-fetch-mode": "navigate", "accept": "text/html"})
    links = re.findall(r'<a href="([^"]+)" hidden aria-hidden="true"', page.text)
    assert page.headers["x-guard-challenge"] == "proof-of-work"
    assert len(links) == 2 and all(site.app.canaries.is_canary(link.rsplit("/", 1)[1]) for link in links)


def test_the_id_walker_hits_a_canary_in_the_canary_range() -> None:
    ids = derive_ids(KEY.encode(), 64, 9_000_000_000, 9_999_999_999)
    assert len(set(ids)) == 64 and all(9_000_000_000 <= int(i) <= 9_999_999_999 for i in ids)
    assert derive_ids(b"another key", 64, 9_000_000_000, 9_999_999_999) != ids  # not computable without it
    walked = CanaryIds(derive_ids(KEY.encode(), 3, 5, 7))
    assert sum(str(n) in walked for n in range(5, 8)) == 3  # a dense range: every walk step is a canary


# -- real crawlers against the demo server (guard demo, a process of its own) --------------


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    with demo_process(env={"GUARD_CANARY_KEY": KEY}) as base:
        yield base


def crawl(base: str, tmp_path: Path, obey: bool) -> list[dict]:
    items, stats = tmp_path / "items.json", tmp_path / "stats.json"
    command = [sys.executable, "-m", "scrapy", "runspider", str(DATA / "link_spider.py"), "-O", str(items)]
    for setting in (f"USER_AGENT={CHROME}", f"ROBOTSTXT_OBEY={obey}", f"BASE={base}", f"STATS_FILE={stats}"):
        command += ["-s", setting]
    subprocess.run([*command, "-s", "LOG_LEVEL=WARNING"], check=True, capture_output=True, timeout=120, cwd=tmp_path)
    return json.loads(items.read_text() or "[]")


def is_canary(path: str) -> bool:
    return re.fullmatch(r"/api/tracks/9\d{9}", path) is not None and int(path.rsplit("/", 1)[1]) in CANARIES


CANARIES = {
    int(i) for i in derive_ids(hashlib.sha256(b"guard canaries:" + KEY.encode()).digest(), 64, 9 * 10**9, 10**10 - 1)
}


def test_a_crawler_obeying_robots_txt_never_fetches_a_canary(demo: str, tmp_path: Path) -> None:
    fetched = crawl(demo, tmp_path, obey=True)
    paths = [item["path"] for item in fetched]
    assert "/" in paths and "/tracks/20" in paths  # it crawled the pages
    assert "/tracks/7/stream" not in paths  # audio (and the challenge page guard puts there) is disallowed
    assert "/sitemap-archive.xml" not in paths and not any(is_canary(p) for p in paths), paths


def test_a_crawler_following_every_link_hits_a_canary_and_is_banned(demo: str, tmp_path: Path) -> None:
    fetched = crawl(demo, tmp_path, obey=False)
    canaries = [item for item in fetched if is_canary(item["path"])]
    assert canaries and canaries[0]["status"] == 200  # the first is a decoy: nothing tells it apart
    # Everything else it fetches from then on is refused; more canaries keep answering decoys
    # (each one more evidence), so a banned scraper cannot tell them apart by status either.
    after = [item for item in fetched[fetched.index(canaries[0]) + 1 :] if not is_canary(item["path"])]
    assert all(item["status"] == 403 for item in after), after
    assert all(item["status"] == 200 for item in canaries)
    # Its address is banned for everything, under any User-Agent (the crawl ran from loopback).
    for user_agent in (CHROME, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"):
        refused = httpx.get(demo + "/tracks/20", headers={"user-agent": user_agent})
        assert refused.status_code == 403 and "canary" in refused.text


def test_a_hit_is_a_metric_and_reaches_the_sweep_detectors_hook(site: Site) -> None:
    from prometheus_client import generate_latest

    heard = []
    site.app.canaries.listeners.append(heard.append)
    track = site.app.canaries.ids.linked(1)[0]
    scraper = site.browser(ip="203.0.113.50")
    assert scraper.get(f"/api/tracks/{track}").status_code == 200
    assert [(h.track, h.group, h.client, h.network, h.banned) for h in heard] == [
        (track, "content_api", "203.0.113.50", "203.0.113.0/24", True)
    ]
    exposed = generate_latest(site.app.observer.registry).decode()
    assert 'guard_canary_hits_total{group="content_api"} 1.0' in exposed


def test_ids_the_application_registers_are_canaries_too(site: Site) -> None:
    site.app.canaries.ids.register([4242])
    assert site.browser(ip="203.0.113.60").page("/tracks/4242").headers["content-type"].startswith("text/html")
    assert site.app.canaries.hits == 1
    assert site.browser(ip="203.0.113.60").page("/tracks/7").status_code == 403
