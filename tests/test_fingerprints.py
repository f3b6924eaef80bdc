"""TLS fingerprints from the edge, through real HTTP and both stores: read only from trusted
proxies, a library's fingerprint under a browser's User-Agent is automation, a rare fingerprint
shares one track budget across every address, and a canary fetch bans the fingerprint too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FakeClock, Site, serving

from guard.demo.app import platform
from guard.fingerprints.catalogue import load_fingerprints
from guard.middleware import DEFAULT_RULES, GuardMiddleware
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore

PYTHON = "t13d181000_85036bcba153_d41ae481755e"  # Python's, in FoxIO's mapping
CHROMIUM = "t13d1516h2_8daaf6152771_02713d6af862"
RARE = "t13d1311h2_aaaaaaaaaaaa_bbbbbbbbbbbb"  # in no catalogue
HEADER = "cloudfront-viewer-ja4-fingerprint"

BUDGET = """version: 1
extends: {default}
rules:
  - id: fingerprint-day
    match: {{path: [audio, content_api]}}
    limit: {{key: fingerprint, distinct: track, max: 5, per: 1d}}
    action: throttle
"""


@pytest.fixture(params=["memory", "redis"])
def store(request):
    return RedisStore.from_url(request.getfixturevalue("redis_url")) if request.param == "redis" else MemoryStore()


def site_with(rules: Path | str, store, trusted: list[str]) -> Iterator[Site]:
    clock = FakeClock()
    app = GuardMiddleware(platform(), rules, store=store, trusted_proxies=trusted, clock=clock)
    with serving(app) as base:
        yield Site(base, clock, app)


@pytest.fixture
def site(store, tmp_path: Path, monkeypatch) -> Iterator[Site]:
    monkeypatch.setenv("GUARD_CANARY_KEY", "fingerprint tests")
    rules = tmp_path / "rules.yaml"
    rules.write_text(BUDGET.format(default=DEFAULT_RULES))
    yield from site_with(rules, store, ["127.0.0.1/32"])


def test_the_shipped_catalogue_is_sourced_and_loads() -> None:
    catalogue = load_fingerprints(DEFAULT_RULES.parent / "fingerprints.yaml")
    assert catalogue.lookup(PYTHON).kind == "library" and catalogue.lookup(CHROMIUM).kind == "browser"
    text = (DEFAULT_RULES.parent / "fingerprints.yaml").read_text()
    assert "FoxIO-LLC/ja4" in text and "date:" in text
    assert catalogue.is_rare(RARE) and catalogue.is_rare(PYTHON) and not catalogue.is_rare(CHROMIUM)


def test_a_browser_user_agent_over_a_library_fingerprint_is_refused_the_api(site: Site) -> None:
    browser = site.browser(ip="198.51.100.5")
    assert browser.get("/api/tracks/7", **{HEADER: CHROMIUM}).status_code == 200
    scripted = site.browser(ip="198.51.100.6")
    refused = scripted.get("/api/tracks/7", **{HEADER: PYTHON})
    assert refused.status_code == 403 and "scraping-tool-content" in refused.text
    assert scripted.page("/tracks/7", **{HEADER: PYTHON}).status_code == 200  # pages stay open to programs


def test_the_fingerprint_header_counts_only_from_a_trusted_proxy(store, monkeypatch) -> None:
    monkeypatch.setenv("GUARD_CANARY_KEY", "fingerprint tests")
    for site in site_with(DEFAULT_RULES, store, []):  # nobody trusted: the header is anyone's to write
        browser = site.browser()
        assert browser.get("/api/tracks/7", **{HEADER: PYTHON}).status_code == 200


def test_a_rare_fingerprint_shares_one_budget_across_rented_identities(site: Site) -> None:
    statuses = []
    for i in range(8):  # a fresh address on a fresh network and a fresh session for every track
        rented = site.browser(ip=f"100.64.{i}.9")
        statuses.append(rented.get(f"/api/tracks/{100 + i}", **{HEADER: RARE}).status_code)
    assert statuses == [200] * 5 + [429] * 3
    # A mainstream browser's fingerprint is never counted: millions of listeners share it.
    for i in range(8):
        listener = site.browser(ip=f"100.65.{i}.9")
        assert listener.get(f"/api/tracks/{100 + i}", **{HEADER: CHROMIUM}).status_code == 200
    # Without the header (no edge in front): no fingerprint, no count.
    assert site.browser(ip="100.66.0.9").get("/api/tracks/120").status_code == 200


def test_a_canary_fetch_bans_the_rare_fingerprint_on_every_address(site: Site) -> None:
    track = site.app.canaries.ids.linked(1)[0]
    first = site.browser(ip="100.70.0.9")
    assert first.get(f"/api/tracks/{track}", **{HEADER: RARE}).status_code == 200  # the decoy
    other = site.browser(ip="100.71.5.9")  # another network, another session, the same TLS stack
    refused = other.get("/api/tracks/7", **{HEADER: RARE})
    assert refused.status_code == 403 and "canary" in refused.text
    assert other.get("/api/tracks/7", **{HEADER: CHROMIUM}).status_code == 200  # a browser there is not
