"""Who is really asking: trusted proxies, IPv6, and claims checked against published ranges."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from support import RULES, FakeClock, Visitor, run

from guard.demo.app import create_app
from guard.identity.address import ClientResolver, parse_ip
from guard.identity.catalogue import load_catalogue
from guard.identity.ranges import RangeVerifier, update_ranges

GOOGLEBOT = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
BINGBOT = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
)
APPLEBOT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) (Applebot/0.1)"
DUCKDUCKBOT = "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)"

# Addresses inside the shipped snapshots (rules/ranges/*.json), and one outside them all.
GENUINE = [
    (GOOGLEBOT, "66.249.66.1"),
    (GOOGLEBOT, "66.249.79.200"),
    (GOOGLEBOT, "2001:4860:4801:10::1"),
    (BINGBOT, "157.55.39.10"),
    (BINGBOT, "40.77.167.88"),
    (APPLEBOT, "17.166.20.5"),
    (DUCKDUCKBOT, "20.191.45.212"),
]
ELSEWHERE = "203.0.113.66"


@pytest.mark.parametrize(("ua", "ip"), GENUINE)
def test_genuine_search_engines_are_served_pages_not_audio(guarded, ua: str, ip: str) -> None:
    bot = guarded(ip, ua)

    async def main() -> None:
        for track in range(1, 200):  # far past any behaviour limit: verified engines are not counted on pages
            assert (await bot.get(f"/tracks/{track}")).status_code == 200
        audio = await bot.get("/tracks/1/stream")
        assert audio.status_code == 403 and "search-engine-content" in audio.text

    run(main())


@pytest.mark.parametrize("ua", [GOOGLEBOT, BINGBOT, APPLEBOT, DUCKDUCKBOT])
def test_the_same_user_agents_from_elsewhere_are_spoofed(guarded, ua: str) -> None:
    r = run(guarded(ELSEWHERE, ua).get("/tracks/1"))
    assert r.status_code == 403 and "spoofed-bot" in r.text


def test_forged_forwarded_headers_from_an_untrusted_peer_change_nothing(policy) -> None:
    app = create_app(policy, clock=FakeClock(), trusted_proxies=["10.0.0.0/8"])
    untrusted = Visitor(app, ELSEWHERE, GOOGLEBOT)
    trusted_proxy = Visitor(app, "10.0.0.5", GOOGLEBOT)

    async def main() -> None:
        for header in ({"x-forwarded-for": "66.249.66.1"}, {"forwarded": "for=66.249.66.1"}):
            assert (await untrusted.get("/tracks/1", headers=header)).status_code == 403
        assert (await trusted_proxy.get("/tracks/1", headers={"x-forwarded-for": "66.249.66.1"})).status_code == 200
        # Only the header the proxies are configured to write counts (x-forwarded-for by default).
        assert (await trusted_proxy.get("/tracks/1", headers={"forwarded": "for=66.249.66.1"})).status_code == 403
        # A forged hop to the left of the real client does not help either.
        forged = {"x-forwarded-for": f"66.249.66.1, {ELSEWHERE}"}
        assert (await trusted_proxy.get("/tracks/1", headers=forged)).status_code == 403

    run(main())


def test_an_ipv6_scraper_rotating_through_one_64_is_one_client(guarded) -> None:
    async def main() -> int:
        obtained = 0
        for track in range(1, 200):
            visitor = guarded(f"2001:db8:abcd:12:{track:x}:{track * 7:x}::1")  # a new address every request
            obtained += (await visitor.get(f"/api/tracks/{track}")).status_code == 200
        return obtained

    assert run(main()) == 40  # the same 40-track limit as one address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1:8080 ", "192.0.2.1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("[2001:DB8:0:0::1]", "2001:db8::1"),
        ("::ffff:192.0.2.9", "192.0.2.9"),  # IPv4-mapped IPv6 is the IPv4 client
        ("127.1", None),  # obfuscated forms are not addresses
        ("0x7f.0.0.1", None),
        ("010.0.0.1", None),
        ("192.0.2.1\x00", None),
        ("unknown", None),
        ("_hidden", None),
        ("[2001:db8::1", None),
        ("", None),
        ("1" * 5000, None),
    ],
)
def test_address_parsing(text: str, expected: str | None) -> None:
    resolver = ClientResolver()
    parsed = parse_ip(text)
    assert (resolver.client(parsed, "").ip if parsed else None) == expected


UNIDENTIFIED = "unidentified-via-10.0.0.1"


@pytest.mark.parametrize(
    ("setting", "headers", "client"),
    [
        (
            "forwarded",
            [(b"forwarded", b'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"')],
            "2001:db8:cafe::/64",
        ),
        ("forwarded", [(b"forwarded", b"for=192.0.2.60, for=10.0.0.9")], "192.0.2.60"),  # the trusted hop is skipped
        ("forwarded", [(b"forwarded", b"for=unknown")], UNIDENTIFIED),  # not an address: the shared bucket
        ("forwarded", [(b"forwarded", b"proto=https")], UNIDENTIFIED),
        ("forwarded", [(b"forwarded", b"for=_x, for=192.0.2.61")], "192.0.2.61"),  # left of the client: unread
        ("forwarded", [(b"x-forwarded-for", b"192.0.2.62")], "10.0.0.1"),  # not the configured header
        ("x-forwarded-for", [(b"x-forwarded-for", b"198.51.100.1, 192.0.2.7")], "192.0.2.7"),
        ("x-forwarded-for", [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"192.0.2.8")], "192.0.2.8"),
        ("x-forwarded-for", [(b"x-forwarded-for", b"192.0.2.7, junk")], UNIDENTIFIED),
        ("x-forwarded-for", [(b"x-forwarded-for", b"junk, unknown, , 192.0.2.7")], "192.0.2.7"),
        ("x-forwarded-for", [(b"x-forwarded-for", b"10.0.0.3, 10.0.0.2")], "10.0.0.3"),  # all trusted: the left-most
        ("x-forwarded-for", [(b"x-forwarded-for", b"1.1.1.1," * 100)], "1.1.1.1"),  # only the right end is read
        ("x-forwarded-for", [(b"x-forwarded-for", b"10.0.0.2," * 40)], UNIDENTIFIED),  # too many trusted hops
        ("x-forwarded-for", [(b"x-forwarded-for", b"fe80::1%eth0")], "fe80::/64"),  # a zone id is dropped
        ("x-forwarded-for", [(b"forwarded", b"for=192.0.2.9")], "10.0.0.1"),  # Forwarded is ignored
        ("x-real-ip", [(b"x-real-ip", b"192.0.2.10"), (b"x-forwarded-for", b"192.0.2.11")], "192.0.2.10"),
    ],
)
def test_forwarded_headers_from_a_trusted_proxy(setting: str, headers, client: str) -> None:
    resolver = ClientResolver(["10.0.0.0/8"], forwarded_header=setting)
    assert resolver.resolve({"client": ("10.0.0.1", 1), "headers": headers}).key == client


def test_range_verifier_answers_for_every_shipped_agent() -> None:
    verifier = RangeVerifier.from_directory(RULES.parent / "ranges")
    shipped = {"googlebot", "bingbot", "applebot", "duckduckbot", "gptbot", "oai-searchbot", "chatgpt-user"}
    assert shipped <= set(verifier.ranges)
    resolver = ClientResolver()
    inside = resolver.client(parse_ip("66.249.67.31"), "")  # last address of 66.249.67.0/27
    outside = resolver.client(parse_ip("66.249.67.32"), "")  # first after it: not listed
    assert verifier.verify("Googlebot", inside) is True
    assert verifier.verify("Googlebot", outside) is False
    assert verifier.verify("Googlebot", resolver.client(parse_ip("2001:4860:4801:4f::1"), "")) is False
    assert verifier.verify("YandexBot", inside) is None  # nothing shipped: cannot be checked


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def range_server(tmp_path: Path):
    """Operators' range files served from a local HTTP server on loopback."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_update_ranges_fetches_validates_and_keeps_the_last_good_file(tmp_path: Path, range_server) -> None:
    served, base = range_server
    (served / "googlebot.json").write_text(
        json.dumps(
            {
                "creationTime": "2026-11-01T00:00:00Z",
                "prefixes": [{"ipv4Prefix": "66.249.64.0/27"}, {"ipv6Prefix": "2001:4860:4801:10::/64"}],
            }
        )
    )
    (served / "bingbot.json").write_text("{not json")
    (served / "applebot.json").write_text(json.dumps({"prefixes": [{"ipv4Prefix": "0.0.0.0/1"}]}))
    catalogue = tmp_path / "agents.yaml"
    (tmp_path / "ai-robots.json").write_text((RULES.parent / "ai-robots.json").read_text())
    (tmp_path / "crawler-lists.json").write_text((RULES.parent / "crawler-lists.json").read_text())
    text = (RULES.parent / "agents.yaml").read_text()
    for name, url in (
        ("googlebot", "https://developers.google.com/static/search/apis/ipranges/googlebot.json"),
        ("bingbot", "https://www.bing.com/toolbox/bingbot.json"),
        ("applebot", "https://search.developer.apple.com/applebot.json"),
    ):
        text = text.replace(url, f"{base}/{name}.json")
    catalogue.write_text(text)
    agents = [a for a in load_catalogue(catalogue).agents if a.name in ("Googlebot", "Bingbot", "Applebot")]
    ranges = tmp_path / "ranges"
    ranges.mkdir()
    shutil.copy(RULES.parent / "ranges" / "bingbot.json", ranges / "bingbot.json")

    report = update_ranges(agents, ranges, timeout=5, log=lambda line: None)

    assert report["Googlebot"] == "updated: 2 prefixes"
    assert report["Bingbot"].startswith("kept: JSONDecodeError")
    assert report["Applebot"].startswith("missing: ValueError: implausibly broad prefix")  # no file to keep
    assert report.failed == ["Bingbot", "Applebot"]
    summary = report.summary(ranges)
    assert (
        summary
        == f"update-ranges: 1 of 3 range files updated in {ranges}; 2 failed (1 kept their last good file, 1 have none)"
    )
    written = json.loads((ranges / "googlebot.json").read_text())
    assert written["source"] == f"{base}/googlebot.json" and written["creationTime"] == "2026-11-01T00:00:00Z"
    assert (ranges / "bingbot.json").read_text() == (RULES.parent / "ranges" / "bingbot.json").read_text()
    assert not (ranges / "applebot.json").exists()
