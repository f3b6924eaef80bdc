"""Artists decide: AI use only by opt-in, verified and licensed, accounted. Through real HTTP,
on the memory store (consent file, JSON-lines ledger) and on Redis (Redis consents, stream)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import urllib.robotparser
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from protego import Protego
from support import CHROME, GPTBOT, RULES, FakeClock, Visitor, browser_get, fetch_headers, run, web_bot_auth

from guard.consent import admin
from guard.consent.ledger import Access, RedisLedger, totals
from guard.consent.licences import Licences, load_key
from guard.consent.settings import ConsentSettings
from guard.consent.sources import load_file
from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.testing import served

SHIPPED = RULES.parent / "consent.yaml"
GPTBOT_IP = "20.171.206.10"  # in rules/ranges/gptbot.json (OpenAI's published ranges)
OUTSIDE_IP = "203.0.113.66"  # documentation range: nobody's crawler
OPTED_TRAIN = 7  # track 7 belongs to artist a7 (ai-train, any operator)
OPTED_INPUT = 12  # a12: ai-input only
PRICED = 42  # a42: ai-train at USD 0.05, ai-input at USD 0.002
NOT_OPTED = 8  # a8: no consent
SEED = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"  # RFC 9421 test-key-ed25519
X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
SIGNER = "https://gptbot.openai.example"


@dataclasses.dataclass
class Platform:
    base: str
    clock: FakeClock
    licences: Licences
    app: object
    loop: asyncio.AbstractEventLoop
    store: str
    redis_url: str | None
    tmp: Path

    def run(self, coro):
        """Run a coroutine on the server's loop (where the app's objects live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def licence(self, artists=("a7",), usages=("ai-train",), operator="OpenAI", days=30.0) -> str:
        return self.licences.issue(operator, artists, usages, now=self.clock(), days=days)

    def get(
        self, track: int, *, ip: str | None = GPTBOT_IP, ua: str = GPTBOT, **headers: str | bytes
    ) -> httpx.Response:
        sent = {"user-agent": ua, **{k.replace("_", "-"): v for k, v in headers.items()}}
        if ip is not None:
            sent["x-forwarded-for"] = ip
        return httpx.get(f"{self.base}/api/tracks/{track}", headers=sent)

    def accesses(self):
        ledger = self.app.consent.ledger  # type: ignore[attr-defined]
        return self.run(ledger.read())

    def registry(self) -> admin.Registry:
        if self.store == "redis":
            return admin.Registry(redis_url=self.redis_url)
        return admin.Registry(self.tmp / "consent.yaml")


def seed_redis(url: str) -> None:
    async def main() -> None:
        registry = admin.Registry(redis_url=url)
        for record in load_file(SHIPPED).values():
            await registry.put(record)
        await registry.close()

    asyncio.run(main())


@pytest.fixture(params=["memory", "redis"])
def platform(request, tmp_path: Path) -> Iterator[Platform]:
    store = request.param
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    shutil.copy(SHIPPED, tmp_path / "consent.yaml")
    signers = tmp_path / "signers.json"
    signers.write_text(json.dumps({SIGNER: {"agent": "GPTBot", "keys": [{"kty": "OKP", "crv": "Ed25519", "x": X}]}}))
    policy = dataclasses.replace(load_rules(RULES), signatures_file=str(signers), _plans={})
    settings = ConsentSettings(
        source="redis" if store == "redis" else "file",
        file=str(tmp_path / "consent.yaml"),
        ledger=str(tmp_path / "ledger.jsonl"),
        licence_key=str(tmp_path / "key.json"),
        refresh=3600,
    )
    if redis_url:
        seed_redis(redis_url)
    clock = FakeClock()
    app = create_app(
        policy, clock=clock, trusted_proxies=["127.0.0.1/32"], redis_url=redis_url, consent=settings, reload_interval=0
    )
    with served(app) as (base, loop):
        yield Platform(base, clock, Licences(load_key(tmp_path / "key.json")), app, loop, store, redis_url, tmp_path)


def signed_headers(clock: FakeClock, port_authority: str, price_header: str | None, price: str | None) -> dict:
    """Web Bot Auth headers from GPTBot's signer, covering the price header when there is one."""
    extra = {price_header: price} if price_header and price is not None else None
    return web_bot_auth(clock(), authority=port_authority, agent=SIGNER, key=SEED, extra=extra)


def pay(platform: Platform, track: int, header: str | None, price: str | None, *, signed_price: bool = True, ip=None):
    authority = platform.base.removeprefix("http://")
    headers = signed_headers(platform.clock, authority, header if signed_price else None, price)
    if header and not signed_price:
        headers[header] = price
    return httpx.get(f"{platform.base}/api/tracks/{track}", headers={"user-agent": GPTBOT, **headers})


def served_content(r: httpx.Response, track: int) -> bool:
    return r.status_code == 200 and r.headers.get("content-type") == "application/json" and r.json()["id"] == track


# -- the acceptance list -------------------------------------------------------------------------


def test_verified_and_licensed_gptbot_gets_the_opted_in_artists_content(platform: Platform) -> None:
    r = platform.get(OPTED_TRAIN, authorization="License " + platform.licence())
    assert served_content(r, OPTED_TRAIN) and r.json()["artist_id"] == "a7"
    assert r.headers["content-usage"] == "train-ai=y"
    assert r.headers["link"].endswith('; rel="license"; type="application/rsl+xml"')
    assert "x-robots-tag" not in r.headers  # "noai" no longer applies to this artist
    [access] = platform.accesses()
    assert (access.artist, access.track, access.operator, access.agent, access.usage) == (
        "a7",
        "7",
        "OpenAI",
        "GPTBot",
        "ai-train",
    )
    assert access.licence and access.licence.startswith("lic_") and access.price is None


def test_verified_but_unlicensed_gets_402_with_the_price_and_the_licence_pointers(platform: Platform) -> None:
    r = platform.get(OPTED_TRAIN)
    assert r.status_code == 402
    assert r.headers["crawler-price"] == "USD 0.01"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('License error="invalid_request"') and 'authorization_uri="' in challenge
    assert r.headers["link"] == f'<{platform.base}/license.xml>; rel="license"; type="application/rsl+xml"'
    assert platform.accesses() == []
    priced = platform.get(PRICED)
    assert priced.status_code == 402 and priced.headers["crawler-price"] == "USD 0.05"  # the artist's own price


def test_paying_within_crawler_max_price_gets_the_content_and_the_charge_is_recorded(platform: Platform) -> None:
    r = pay(platform, OPTED_TRAIN, "crawler-max-price", "USD 0.05")
    assert served_content(r, OPTED_TRAIN)
    assert r.headers["crawler-charged"] == "USD 0.01"  # the price, not the maximum
    exact = pay(platform, PRICED, "crawler-exact-price", "USD 0.05")
    assert served_content(exact, PRICED) and exact.headers["crawler-charged"] == "USD 0.05"
    paid = [(a.artist, a.price, a.licence) for a in platform.accesses()]
    assert paid == [("a7", "USD 0.01", None), ("a42", "USD 0.05", None)]
    [a42, a7] = totals(platform.accesses())  # sorted by artist id
    assert (a7.paid, str(a7.charged["USD"]), a42.paid, str(a42.charged["USD"])) == (1, "0.01", 1, "0.05")


@pytest.mark.parametrize(
    ("header", "price", "signed", "status", "error"),
    [
        ("crawler-max-price", "USD 0.009", True, 402, "InvalidCrawlerMaxPrice"),
        ("crawler-exact-price", "USD 0.02", True, 402, "InvalidCrawlerExactPrice"),
        ("crawler-max-price", "EUR 5.00", True, 402, "InvalidCrawlerMaxPrice"),
        ("crawler-max-price", "USD 0.05", False, 400, "StrongAuthRequired"),  # price header not signed
        ("crawler-max-price", "lots", True, 400, "InvalidCrawlerPriceValue"),
    ],
)
def test_payments_that_do_not_cover_the_price_or_are_not_signed_get_nothing(
    platform: Platform, header: str, price: str, signed: bool, status: int, error: str
) -> None:
    r = pay(platform, OPTED_TRAIN, header, price, signed_price=signed)
    assert r.status_code == status and r.headers["crawler-error"] == error
    assert platform.accesses() == []


def test_a_price_header_without_a_signature_is_not_a_payment(platform: Platform) -> None:
    r = platform.get(OPTED_TRAIN, crawler_max_price="USD 1.00")  # verified by ranges, but unsigned
    assert r.status_code == 400 and r.headers["crawler-error"] == "StrongAuthRequired"
    both = platform.get(OPTED_TRAIN, crawler_max_price="USD 1.00", crawler_exact_price="USD 0.01")
    assert both.status_code == 400 and both.headers["crawler-error"] == "ConflictingPriceHeaders"


def test_a_spoofed_gptbot_gets_403_even_with_a_licence(platform: Platform) -> None:
    token = platform.licence()
    for ip in (OUTSIDE_IP, None):  # another address; no forwarded address (the proxy itself)
        r = platform.get(OPTED_TRAIN, ip=ip, authorization="License " + token)
        assert r.status_code == 403 and "not verified" in r.text
    forged = platform.get(OPTED_TRAIN, ip=OUTSIDE_IP, crawler_max_price="USD 1.00")
    assert forged.status_code == 403
    assert platform.accesses() == []


def test_wrong_artist_usage_operator_or_an_expired_licence_never_opens_content(platform: Platform) -> None:
    other_key = Licences(load_key(platform.tmp / "other.json"))
    cases = {
        "other artist": (PRICED, platform.licence(artists=("a7",))),
        "other usage": (OPTED_TRAIN, platform.licence(usages=("ai-input",))),
        "other operator": (OPTED_TRAIN, platform.licence(operator="Anthropic")),
        "forged": (OPTED_TRAIN, platform.licence()[:-4] + "AAAA"),
        "other key": (OPTED_TRAIN, other_key.issue("OpenAI", ["a7"], ["ai-train"], now=platform.clock())),
        "expired": (OPTED_TRAIN, platform.licence(days=1)),
    }
    platform.clock.advance(86400 + 1)
    for name, (track, token) in cases.items():
        for scheme in ("License", "license", "LICENSE"):
            r = platform.get(track, authorization=f"{scheme} {token}")
            assert r.status_code in (402, 403), name
            assert 'error="invalid_token"' in r.headers.get("www-authenticate", ""), name
            assert "artist_id" not in r.text, name
    assert platform.accesses() == []


def test_an_artist_who_did_not_opt_in_gets_403_even_with_a_licence(platform: Platform) -> None:
    token = platform.licence(artists=("a8", "a7"), usages=("ai-train", "ai-input"))
    r = platform.get(NOT_OPTED, authorization="License " + token)
    assert r.status_code == 403 and "ai-training" in r.text  # the rules' answer, as without consent
    paid = pay(platform, NOT_OPTED, "crawler-max-price", "USD 9.00")
    assert paid.status_code == 403
    input_only = platform.get(OPTED_INPUT, authorization="License " + token)  # a12 opted in to ai-input only
    assert input_only.status_code == 403
    assert platform.accesses() == []


def test_a_revoke_takes_effect_on_the_very_next_request(platform: Platform) -> None:
    token = "License " + platform.licence()
    assert platform.get(OPTED_TRAIN, authorization=token).status_code == 200

    async def revoke() -> None:
        registry = platform.registry()
        await admin.revoke(registry, "a7")
        await registry.close()

    asyncio.run(revoke())
    if platform.store == "memory":  # the file source notices on its next refresh (seconds)
        platform.run(platform.app.consent.source.refresh())  # type: ignore[attr-defined]
    r = platform.get(OPTED_TRAIN, authorization=token)
    assert r.status_code == 403 and "artist_id" not in r.text
    assert len(platform.accesses()) == 1


def test_a_thousand_licensed_fetches_give_a_thousand_records_and_the_right_totals(platform: Platform) -> None:
    train = "License " + platform.licence(artists=("a7", "a42"))
    tracks = [7 + 500 * i for i in range(100)] + [42 + 500 * i for i in range(100)]
    with httpx.Client(base_url=platform.base, headers={"user-agent": GPTBOT, "x-forwarded-for": GPTBOT_IP}) as client:
        for n in range(1000):
            track = tracks[n % len(tracks)]
            r = client.get(f"/api/tracks/{track}", headers={"authorization": train})
            assert r.status_code == 200, (n, r.text)
    accesses = platform.accesses()
    assert len(accesses) == 1000
    report = {(t.artist, t.usage, t.operator): (t.accesses, t.licensed, t.paid) for t in totals(accesses)}
    assert report == {("a42", "ai-train", "OpenAI"): (500, 500, 0), ("a7", "ai-train", "OpenAI"): (500, 500, 0)}
    assert {t.artist for t in totals(accesses, "a7")} == {"a7"}
    registry = platform.app.observer.registry  # type: ignore[attr-defined]
    labels = {"usage": "ai-train", "operator": "OpenAI", "outcome": "licensed"}
    assert registry.get_sample_value("guard_consent_requests_total", labels) == 1000


# -- published signals ---------------------------------------------------------------------------

RSL = "{https://rslstandard.org/rsl}"


def test_license_xml_has_the_rsl_structure(platform: Platform) -> None:
    r = httpx.get(platform.base + "/license.xml", headers={"user-agent": GPTBOT})  # directives are free
    assert r.status_code == 200 and r.headers["content-type"] == "application/rsl+xml"
    root = ET.fromstring(r.content)
    assert root.tag == RSL + "rsl"
    contents = {c.get("url"): c for c in root.findall(RSL + "content")}
    assert {"/artists/a7", "/api/artists/a7", "/artists/a12", "/artists/a42", "/"} <= set(contents)
    assert "/artists/a8" not in contents
    a7 = contents["/artists/a7"].find(RSL + "license")
    assert a7.find(RSL + "permits").get("type") == "usage" and a7.find(RSL + "permits").text == "ai-train"
    assert a7.find(RSL + "prohibits").text == "ai-input"
    payment = a7.find(RSL + "payment")
    assert payment.get("type") == "crawl"
    assert (payment.find(RSL + "amount").get("currency"), payment.find(RSL + "amount").text) == ("USD", "0.01")
    licence_only = contents["/artists/a21"].find(RSL + "license")
    assert licence_only.find(RSL + "payment") is None
    site = contents["/"].find(RSL + "license").find(RSL + "prohibits")
    assert (site.get("type"), site.text) == ("usage", "ai-all")


def test_robots_txt_adds_the_licence_and_content_signals_and_parsers_read_it_as_before(platform: Platform) -> None:
    text = httpx.get(platform.base + "/robots.txt", headers={"user-agent": GPTBOT}).text
    assert f"License: {platform.base}/license.xml" in text.splitlines()
    star = text.split("User-agent: *\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "Content-Signal: search=yes, ai-train=no, ai-input=no" in star
    assert "Content-Usage: /artists/a7$ train-ai=y" in star and "Content-Usage: /artists/a12$ train-ai=y" not in star
    protego, robotparser = Protego.parse(text), urllib.robotparser.RobotFileParser()
    robotparser.parse(text.splitlines())
    for agent in ("GPTBot", "ClaudeBot", "CCBot"):
        for path in ("/tracks/7/stream", "/api/tracks/7", "/artists/a7", "/tracks/8"):
            url = f"https://music.example{path}"
            assert not protego.can_fetch(url, agent) and not robotparser.can_fetch(agent, url), (agent, path)
    for path in ("/", "/tracks/7", "/artists/a7"):
        url = f"https://music.example{path}"
        assert protego.can_fetch(url, "Googlebot") and robotparser.can_fetch("Googlebot", url)


def test_browser_responses_carry_the_artists_choice(platform: Platform) -> None:
    platform.run(platform.app.consent.source.refresh())  # type: ignore[attr-defined]  # as the background task does
    browser = {"user-agent": CHROME, "x-forwarded-for": "198.51.100.40"}
    with httpx.Client(base_url=platform.base, headers=browser) as client:

        def get(path: str) -> httpx.Response:  # pages as navigations, the audio with the pages' session
            return browser_get(client, path, headers=fetch_headers(path))

        opted = get("/tracks/7")
        assert opted.status_code == 200 and opted.headers["content-usage"] == "train-ai=y"
        assert opted.headers["tdm-reservation"] == "1" and opted.headers["tdm-policy"].endswith("/license.xml")
        artist = get("/artists/a7")
        assert artist.headers["content-usage"] == "train-ai=y"
        other = get("/tracks/8")
        assert other.headers["content-usage"] == "train-ai=n" and other.headers["x-robots-tag"] == "noai, noimageai"
        assert 'rel="license"' in other.headers["link"]
        audio = get("/tracks/7/stream")
        assert audio.status_code == 200 and audio.content.startswith(b"ID3")  # the body is untouched


# -- the demo as shipped -------------------------------------------------------------------------


def test_the_demo_names_artists() -> None:
    from guard.demo.app import platform as demo_platform

    visitor = Visitor(demo_platform(), "198.51.100.41")

    async def main() -> None:
        track = (await visitor.get("/api/tracks/507")).json()
        assert track["artist_id"] == "a7"
        artist = (await visitor.get("/api/artists/a7")).json()
        assert artist["id"] == "a7" and 507 in artist["tracks"] and len(artist["tracks"]) == 200
        for missing in ("/api/artists/a0", "/api/artists/a07", "/api/artists/a501", "/artists/x"):
            assert (await visitor.get(missing)).status_code == 404
        page = await visitor.get("/artists/a7")
        assert page.status_code == 200 and artist["name"] in page.text

    run(main())
    consents = load_file(SHIPPED)
    assert {u for r in consents.values() for u in r.usages(0)} >= {"ai-train", "ai-input"}


def test_explain_shows_the_consent_and_the_licence(platform: Platform) -> None:

    token = platform.licence()
    report = platform.run(
        admin.explain_request(
            platform.app,  # type: ignore[arg-type]
            user_agent=GPTBOT,
            ip="127.0.0.1",
            path="/api/tracks/7",
            headers=[(b"x-forwarded-for", GPTBOT_IP.encode()), (b"authorization", f"License {token}".encode())],
        )
    )
    assert report["artist"] == "a7" and report["usage"] == "ai-train"
    assert report["consent"] == {"usage": "ai-train"} and report["licence"]["operator"] == "OpenAI"
    assert report["verdict"]["status"] == 200
    assert platform.accesses() == []  # explaining records nothing


def test_odd_licence_headers_never_raise(platform: Platform) -> None:
    values = ("License", "License   x", "Bearer x", "License " + "A" * 10000, "License a.b.c", "License \xff\xfe")
    for value in values:
        r = platform.get(OPTED_TRAIN, authorization=value.encode("latin-1"))
        assert r.status_code in (402, 431, 400), value
    assert platform.accesses() == []


def test_a_ledger_that_cannot_be_written_serves_nothing(platform: Platform) -> None:
    class Broken:
        name = "broken"

        async def record(self, access: Access, condition=None) -> bool:
            raise OSError("disk full")

    platform.app.consent.ledger = Broken()  # type: ignore[attr-defined]
    r = platform.get(OPTED_TRAIN, authorization="License " + platform.licence())
    assert r.status_code == 503 and "artist_id" not in r.text


def test_redis_ledger_reads_back_what_it_wrote(redis_url: str) -> None:
    from guard.stores.redis import redis_client

    async def main() -> list:
        client = redis_client(redis_url)
        ledger = RedisLedger(client, "guard", maxlen=100)
        for i in range(3):
            access = Access(1_800_000_000 + i, "a7", str(i), "OpenAI", "GPTBot", "ai-train", price="USD 0.01")
            await ledger.record(access)
        since = await ledger.read(1_800_000_001)
        await client.aclose()
        return since

    assert [a.track for a in asyncio.run(main())] == ["1", "2"]


def test_scraper_tricks_on_opted_in_content(platform: Platform) -> None:
    token = "License " + platform.licence()
    # Another agent of the same operator, from GPTBot's addresses: its own ranges decide.
    assistant = (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot"
    )
    r = platform.get(OPTED_TRAIN, ua=assistant, authorization=token)
    assert r.status_code == 403 and "artist_id" not in r.text
    # Path spellings that name another artist's track, or the same one in other words.
    headers = {"user-agent": GPTBOT, "x-forwarded-for": GPTBOT_IP, "authorization": token}
    for path in ("/api/tracks/7/../8", "/api/tracks/8?track=7", "/api/tracks//8", "/api/tracks/%38", "/api/artists/a8"):
        r = httpx.get(platform.base + path, headers=headers)
        assert "a8" not in r.text or r.status_code != 200, path
    for path in ("/api/tracks/0007", "/api/tracks/+7", "/api/tracks/7.0"):
        r = httpx.get(platform.base + path, headers=headers)
        assert r.status_code != 200 or r.json()["artist_id"] == "a7", path
    # A second Authorization header does not smuggle another licence past the first.
    other = platform.licence(artists=("a42",))
    raw = [("user-agent", GPTBOT), ("x-forwarded-for", GPTBOT_IP), ("authorization", token), ("authorization", other)]
    r = httpx.get(f"{platform.base}/api/tracks/{PRICED}", headers=raw)
    assert r.status_code == 402
    # A browser User-Agent with a licence is a browser: the rules, not the licence, decide.
    browser = platform.get(OPTED_TRAIN, ua=CHROME, ip="198.51.100.77", authorization=token)
    assert browser.status_code == 200 and "crawler-charged" not in browser.headers
    # Only a7's track was served to the licensed agent (in whatever spelling), and each is on the ledger.
    assert {(a.artist, a.track) for a in platform.accesses()} <= {("a7", "7")}


def test_a_licensed_fetch_costs_one_redis_round_trip(platform: Platform) -> None:
    if platform.store == "memory":  # the file source and the file ledger have no Redis at all
        assert getattr(platform.app.consent.source, "client", None) is None  # type: ignore[attr-defined]
        return
    token = "License " + platform.licence()
    assert platform.get(OPTED_TRAIN, authorization=token).status_code == 200  # reads a7's record once
    client = platform.app.consent.source.client  # type: ignore[attr-defined]
    calls: list[str] = []
    for name in ("get", "xadd", "eval", "evalsha", "mget", "smembers"):
        original = getattr(client, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(client, name, counted)
    for track in (507, 1007, 1507):
        assert platform.get(track, authorization=token).status_code == 200
    assert calls == ["eval", "eval", "eval"]  # the consent check and the record: one script each
    assert len(platform.accesses()) == 4
