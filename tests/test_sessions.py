"""Sessions bound to audio, over real HTTP: cookies, the browser-to-media-stack hand-offs,
binding to network and device, expiry, key rotation, minting limits, apps and signed URLs.

The guarded demo runs under uvicorn on loopback with an injected clock; client addresses
other than 127.0.0.1 come in X-Forwarded-For from loopback, a trusted proxy here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from support import CHROME, NAVIGATE, RULES, FakeClock, Site, run, serving

from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings, issue_token, sign_stream_url
from guard.sessions.settings import CookieSettings
from guard.sessions.tokens import SessionCodec, platform_of

KEY = "k" * 40
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.6.1 Mobile/15E148 Safari/604.1"
)
IPHONE_MEDIA = "AppleCoreMedia/1.0.0.22H20 (iPhone; U; CPU OS 18_7 like Mac OS X; en_us)"
IPAD_SAFARI = (  # iPadOS asks for desktop sites: its Safari says Macintosh
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.6 Safari/605.1.15"
)
IPAD_MEDIA = "AppleCoreMedia/1.0.0.22G86 (iPad; U; CPU OS 18_6 like Mac OS X; en_us)"
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
STAGEFRIGHT = "stagefright/1.2 (Linux;Android 14)"
EXOPLAYER = "ExoPlayerLib/2.19.1"
APP_EXOPLAYER = "Tunes/5.2 (Linux;Android 14) ExoPlayerLib/2.19.1"


def settings(**changes) -> SessionSettings:
    base = SessionSettings()
    challenge = replace(base.challenge, difficulty=8)  # a few hundred hashes: fast tests
    return replace(base, challenge=challenge, **changes)


@pytest.fixture(scope="module")
def shipped():
    return load_rules(RULES)


@pytest.fixture
def site(shipped) -> Iterator[Site]:
    clock = FakeClock()
    app = create_app(
        shipped,
        clock=clock,
        trusted_proxies=["127.0.0.1/32"],
        sessions=settings(),
        session_keys=SessionKeys(KEY),
    )
    with serving(app) as base:
        yield Site(base, clock, app)


def test_a_page_sets_an_httponly_lax_cookie_and_the_audio_needs_it(site: Site) -> None:
    browser = site.browser()
    page = browser.page()
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("guard_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback ("auto": Secure over https)
    assert browser.audio().status_code == 206
    assert browser.get("/tracks/7/stream").content.startswith(b"ID3")

    stranger = site.browser(ip="198.51.100.8")
    r = stranger.audio()
    assert r.status_code == 401
    assert r.text.count("\n") == 1 and "session" in r.text


def test_the_cookie_is_set_once_and_not_again_while_it_is_valid(site: Site) -> None:
    browser = site.browser()
    assert "set-cookie" in browser.page().headers
    assert "set-cookie" not in browser.page("/tracks/8").headers
    assert "set-cookie" not in browser.get("/api/tracks/8").headers
    assert "set-cookie" not in browser.audio().headers


def test_pages_directives_and_health_never_require_a_session(site: Site) -> None:
    client = httpx.Client(base_url=site.base)  # keeps no cookies
    for path in ("/", "/tracks/3", "/api/tracks/3", "/robots.txt", "/ai.txt", "/healthz"):
        r = client.get(path, headers={"user-agent": CHROME, "cookie": ""})
        assert r.status_code == 200, path
    for path in ("/robots.txt", "/healthz"):
        assert "set-cookie" not in client.get(path, headers={"user-agent": CHROME}).headers


@pytest.mark.parametrize(
    ("page_ua", "media_ua"),
    [
        (IPHONE_SAFARI, IPHONE_MEDIA),
        (IPAD_SAFARI, IPAD_MEDIA),
        (ANDROID_CHROME, STAGEFRIGHT),
        (ANDROID_CHROME, EXOPLAYER),
        (ANDROID_CHROME, APP_EXOPLAYER),
    ],
    ids=["iphone-applecoremedia", "ipad-desktop-safari", "android-stagefright", "android-exoplayer", "android-app"],
)
def test_the_media_stack_of_the_same_device_plays_with_the_browsers_cookie(site: Site, page_ua, media_ua) -> None:
    browser = site.browser(page_ua)
    assert browser.page().status_code == 200
    r = browser.audio(user_agent=media_ua)
    assert r.status_code == 206, r.text


def test_a_cookie_copied_to_another_device_is_refused_and_to_another_network_follows(site: Site) -> None:
    phone = site.browser(IPHONE_SAFARI, ip="203.0.113.10")
    phone.page()
    token = phone.token
    assert token

    def audio_with(user_agent: str, ip: str) -> httpx.Response:
        headers = {"user-agent": user_agent, "x-forwarded-for": ip, "cookie": f"guard_session={token}"}
        return httpx.get(site.base + "/tracks/7/stream", headers=headers)

    assert audio_with(IPHONE_MEDIA, "203.0.113.99").status_code == 200  # same /24: a DHCP renewal
    other_device = audio_with(CHROME, "203.0.113.10")
    assert other_device.status_code == 401 and "another device" in other_device.text
    other_network = audio_with(IPHONE_MEDIA, "198.51.100.10")  # the phone left Wi-Fi for 4G
    assert other_network.status_code == 200 and "set-cookie" in other_network.headers  # moved there, counted


def test_ipv6_binds_to_the_48_and_a_dual_stack_browser_keeps_its_session(site: Site) -> None:
    browser = site.browser(CHROME, ip="2001:db8:1:2::5")
    browser.page()
    privacy = browser.audio(ip="2001:db8:1:3:a:b:c:d")  # privacy address, same /48: nothing to re-send
    assert privacy.status_code == 206 and "set-cookie" not in privacy.headers

    # The audio arrives over IPv4: the empty IPv4 slot is bound, and the cookie updated.
    first_v4 = browser.audio(ip="192.0.2.44")
    assert first_v4.status_code == 206 and "set-cookie" in first_v4.headers
    assert "set-cookie" not in browser.audio(ip="192.0.2.45").headers
    assert browser.audio(ip="2001:db8:1:2::6").status_code == 206  # the IPv6 binding held


def test_sessions_expire_and_a_page_load_mints_a_new_one(site: Site) -> None:
    browser = site.browser()
    browser.page()
    first = browser.token
    site.clock.advance(86400 + 7 * 86400 + 1)  # its life and its grace
    r = browser.audio()
    assert r.status_code == 401 and "expired" in r.text
    assert "set-cookie" in browser.page().headers
    assert browser.token != first
    assert browser.audio().status_code == 206


def test_forged_and_tampered_tokens_are_refused(site: Site) -> None:
    browser = site.browser()
    browser.page()
    token = browser.token
    assert token
    now = site.clock()
    other_key = SessionCodec(SessionKeys("x" * 40)).new(now, "windows", 4, "")
    forged = SessionCodec(SessionKeys("x" * 40)).dumps(other_key)
    payload, signature = token.rsplit(".", 1)
    variants = [
        forged,
        payload.replace("~p~", "~f~") + "." + signature,  # edited state
        payload + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        token + "x",
        "1~a~b",
        "x" * 5000,
        "\u00e4".encode("latin-1"),
    ]
    for bad in variants:
        value = b"guard_session=" + (bad if isinstance(bad, bytes) else bad.encode())
        headers = {"user-agent": CHROME, "x-forwarded-for": browser.ip, "cookie": value}
        r = httpx.get(site.base + "/tracks/7/stream", headers=headers)
        assert r.status_code == 401, bad
    # A junk copy first and the real one second (two cookie headers): the real one counts.
    headers = {
        "user-agent": CHROME,
        "x-forwarded-for": browser.ip,
        "cookie": f"guard_session=junk; guard_session={token}",
    }
    assert httpx.get(site.base + "/tracks/7/stream", headers=headers).status_code == 200


def test_key_rotation_keeps_sessions_signed_with_the_previous_key(shipped) -> None:
    clock = FakeClock()
    old, new = "o" * 40, "n" * 40

    def site_with(keys: SessionKeys):
        return create_app(shipped, clock=clock, sessions=settings(), session_keys=keys)

    with serving(site_with(SessionKeys(old))) as base:
        client = httpx.Client(base_url=base)
        client.get("/tracks/1", headers={"user-agent": CHROME, **NAVIGATE})
        token = client.cookies["guard_session"]
    cookie = {"user-agent": CHROME, "cookie": f"guard_session={token}"}
    with serving(site_with(SessionKeys(new, previous=old))) as base:
        assert httpx.get(base + "/tracks/1/stream", headers=cookie).status_code == 200
    with serving(site_with(SessionKeys(new))) as base:
        assert httpx.get(base + "/tracks/1/stream", headers=cookie).status_code == 401


def test_minting_is_limited_per_address_and_per_subnet(shipped) -> None:
    clock = FakeClock()
    from guard.policy.limits import RateLimit

    tight = settings(mint_per_address=RateLimit(3, 3600, 3), mint_per_subnet=RateLimit(5, 3600, 5))
    app = create_app(
        shipped, clock=clock, trusted_proxies=["127.0.0.1/32"], sessions=tight, session_keys=SessionKeys(KEY)
    )
    with serving(app) as base:

        def mints(ip: str, n: int) -> int:
            count = 0
            for _ in range(n):
                headers = {"user-agent": CHROME, "x-forwarded-for": ip, **NAVIGATE}
                r = httpx.get(base + "/tracks/2", headers=headers)  # no cookie jar: a rotating client
                assert r.status_code == 200  # the page itself is always served
                count += "set-cookie" in r.headers
            return count

        assert mints("198.51.100.1", 10) == 3
        # The /24 has had 4 of its 5: three sessions, and the first attempt over the address's
        # limit (after which that address stops trying for a while).
        assert mints("198.51.100.2", 10) == 1
        assert mints("203.0.113.1", 10) == 3  # another /24 is not affected
        clock.advance(3600)
        assert mints("198.51.100.1", 1) == 1


def test_one_store_call_per_request_with_sessions(shipped) -> None:
    from guard.stores.memory import MemoryStore

    class Counting(MemoryStore):
        calls = 0

        async def apply(self, now, checks):
            Counting.calls += 1
            return await super().apply(now, checks)

    clock = FakeClock()
    app = create_app(shipped, store=Counting(), clock=clock, sessions=settings(), session_keys=SessionKeys(KEY))
    with serving(app) as base:
        client = httpx.Client(base_url=base)
        for path in ("/tracks/4", "/tracks/4/stream", "/api/tracks/4", "/tracks/5"):
            before = Counting.calls
            client.get(path, headers={"user-agent": CHROME, **NAVIGATE})
            assert Counting.calls - before == 1, path
        before = Counting.calls
        assert httpx.get(base + "/tracks/4/stream", headers={"user-agent": CHROME}).status_code == 401
        assert Counting.calls == before  # refused without a session: no store call at all


@pytest.mark.parametrize(
    ("cookie", "expected", "absent"),
    [
        (CookieSettings(), ["HttpOnly", "SameSite=Lax"], ["Secure", "Partitioned"]),
        (CookieSettings(secure=True), ["Secure", "SameSite=Lax"], ["Partitioned"]),
        (CookieSettings(same_site="None", partitioned=True), ["Secure", "SameSite=None", "Partitioned"], []),
        (CookieSettings(name="sid", http_only=False), ["sid="], ["HttpOnly"]),
    ],
    ids=["default", "secure", "embedded-player", "renamed"],
)
def test_cookie_attributes_follow_the_settings(shipped, cookie, expected, absent) -> None:
    app = create_app(shipped, clock=FakeClock(), sessions=settings(cookie=cookie), session_keys=SessionKeys(KEY))
    with serving(app) as base:
        header = httpx.get(base + "/tracks/1", headers={"user-agent": CHROME, **NAVIGATE}).headers["set-cookie"]
    for part in expected:
        assert part in header
    for part in absent:
        assert part not in header


def test_an_app_token_from_login_plays_binds_to_its_network_and_follows_the_phone(site: Site) -> None:
    keys = SessionKeys(KEY)
    app = site.browser(APP_EXOPLAYER, ip="198.51.100.77")
    app.client.cookies.set("guard_session", issue_token(keys, APP_EXOPLAYER, now=site.clock()), domain="127.0.0.1")
    first = app.audio(9)
    assert first.status_code == 206 and "set-cookie" in first.headers  # bound to this network now
    moved = app.audio(9, ip="203.0.113.77")  # the phone left Wi-Fi: the session moves with it
    assert moved.status_code == 206 and "set-cookie" in moved.headers
    assert app.audio(9, user_agent=CHROME).status_code == 401  # but not to another kind of device
    bound = issue_token(keys, APP_EXOPLAYER, "203.0.113.5", now=site.clock())
    headers = {"user-agent": APP_EXOPLAYER, "cookie": f"guard_session={bound}", "x-forwarded-for": "203.0.113.77"}
    assert httpx.get(site.base + "/tracks/9/stream", headers=headers).status_code == 200


def test_signed_stream_urls_work_for_their_path_until_they_expire(site: Site) -> None:
    keys = SessionKeys(KEY)
    url = sign_stream_url(keys, "/tracks/11/stream", "user-42", expires_at=site.clock() + 300)
    # A cast receiver (Chromecast: a media player, no cookies) playing a URL it was handed.
    plain = {
        "user-agent": "Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/90.0.4430.225 Safari/537.36 CrKey/1.56.500000"
    }
    assert httpx.get(site.base + url, headers=plain).status_code == 200
    other = url.replace("/tracks/11/", "/tracks/12/")
    assert httpx.get(site.base + other, headers=plain).status_code == 401
    tampered = url[:-3] + ("abc" if not url.endswith("abc") else "xyz")
    assert httpx.get(site.base + tampered, headers=plain).status_code == 401
    site.clock.advance(301)
    assert httpx.get(site.base + url, headers=plain).status_code == 401


def test_the_session_is_in_the_facts_with_a_stable_id(shipped) -> None:
    from support import Visitor

    clock = FakeClock()
    app = create_app(shipped, clock=clock, sessions=settings(), session_keys=SessionKeys(KEY))
    seen = []
    decide = app.guard.decide

    async def spy(facts):
        seen.append(facts.session)
        return await decide(facts)

    app.guard.decide = spy
    visitor = Visitor(app, "198.51.100.3")

    async def main() -> None:
        first = await visitor.get("/tracks/1", headers=NAVIGATE)
        cookie = first.headers["set-cookie"].split(";", 1)[0]
        clock.advance(5)
        await visitor.get("/tracks/1/stream", headers={"cookie": cookie})
        await visitor.get("/tracks/2/stream", headers={"cookie": cookie})

    run(main())
    assert seen[0] is None
    assert seen[1] is not None and seen[1].id == seen[2].id
    assert seen[1].issued_at == int(clock() - 5)
    assert isinstance(seen[1].id, str) and len(seen[1].id) >= 16


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        (IPHONE_SAFARI, "apple"),
        (IPHONE_MEDIA, "apple"),
        (IPAD_SAFARI, "apple"),
        (IPAD_MEDIA, "apple"),
        (ANDROID_CHROME, "android"),
        (STAGEFRIGHT, "android"),
        (EXOPLAYER, "android"),
        (CHROME, "windows"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "linux"),
        (None, "other"),
        ("python-requests/2.32", "other"),
    ],
)
def test_platform_families(user_agent, family) -> None:
    assert platform_of(user_agent) == family


def test_with_artist_consent_on_the_cookie_is_still_set(shipped, tmp_path) -> None:
    import shutil

    from guard.consent.settings import ConsentSettings

    shutil.copy(RULES.parent / "consent.yaml", tmp_path / "consent.yaml")
    consent = ConsentSettings(
        source="file",
        file=str(tmp_path / "consent.yaml"),
        ledger=str(tmp_path / "ledger.jsonl"),
        licence_key=str(tmp_path / "key.json"),
        refresh=3600,
    )
    clock = FakeClock()
    app = create_app(
        shipped, clock=clock, consent=consent, sessions=settings(), session_keys=SessionKeys(KEY), reload_interval=0
    )
    with serving(app) as base:
        site = Site(base, clock, app)
        browser = site.browser()
        page = browser.page("/tracks/7")
        assert page.status_code == 200 and "set-cookie" in page.headers
        assert browser.audio(7).status_code == 206
        assert site.browser(ip="198.51.100.9").audio(7).status_code == 401


def test_rolling_the_key_file_and_reloading_keeps_then_ends_old_sessions(tmp_path) -> None:
    from support import Visitor

    key_file = tmp_path / "session.key"
    key_file.write_text("o" * 40 + "\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nextends: default\nsessions: {key_file: session.key}\n")
    app = create_app(str(rules), clock=FakeClock(), reload_interval=0)
    browser = Visitor(app, "198.51.100.60")

    async def main() -> list[int]:
        statuses = [(await browser.get("/tracks/1")).status_code, (await browser.get("/tracks/1/stream")).status_code]
        key_file.write_text("n" * 40 + "\n" + "o" * 40 + "\n")  # new current key, the old one as previous
        assert await app.reload("key rolled")
        statuses.append((await browser.get("/tracks/1/stream")).status_code)
        key_file.write_text("n" * 40 + "\n")  # the old key dropped
        assert await app.reload("old key dropped")
        statuses.append((await browser.get("/tracks/1/stream")).status_code)
        return statuses

    assert run(main()) == [200, 200, 200, 401]


def test_explain_reads_the_session_and_says_why_audio_needs_one(shipped) -> None:
    from guard.ops.explain import explain, format_text

    clock = FakeClock()
    app = create_app(shipped, clock=clock, session_keys=SessionKeys(KEY))
    guard, sessions = app.guard, app.sessions
    cookie = issue_token(SessionKeys(KEY), CHROME, "198.51.100.9", now=clock())

    async def ask(**headers: str) -> dict:
        sent = [(k.encode(), v.encode()) for k, v in headers.items()]
        return await explain(
            guard, user_agent=CHROME, ip="198.51.100.9", path="/tracks/1/stream", headers=sent, sessions=sessions
        )

    none = run(ask())
    assert none["decision"]["action"] == "challenge" and none["decision"]["rule"] == "session-required"
    assert none["session"]["state"] == "none" and none["session"]["required_here"] is True
    assert "session:  none; this path requires one" in format_text(none)

    forged = run(ask(cookie="guard_session=" + cookie[:-4] + "AAAA"))
    assert forged["decision"]["action"] == "challenge" and forged["session"]["problem"]

    proven = run(ask(cookie="guard_session=" + cookie))
    assert proven["decision"]["action"] == "allow"
    assert proven["session"]["state"] == "proven" and proven["session"]["platform"] == "windows"
    assert "session:  proven (id " in format_text(proven)
    counters = [r for r in proven["rules"] if r["id"] == "session-day"]
    assert counters[0]["counter"]["key"].endswith(":s:" + proven["session"]["id"])  # counted by the session


def test_a_listener_who_keeps_using_the_site_is_renewed_and_one_back_after_a_night_is_not_fresh(
    site: Site,
) -> None:
    codec = SessionCodec(SessionKeys(KEY))
    browser = site.browser()
    browser.page()
    first = codec.loads(browser.token or "")
    assert first is not None
    site.clock.advance(13 * 3600)  # past half of the day a session lives
    metadata = browser.get("/api/tracks/7", sec_fetch_mode="cors", accept="application/json")
    renewed = codec.loads(browser.token or "")
    assert "set-cookie" in metadata.headers and renewed is not None
    assert renewed.id == first.id and renewed.issued_at > first.issued_at  # same budgets, a new day
    site.clock.advance(13 * 3600)  # the first token would have expired by now
    assert browser.audio().status_code == 206

    # Back after more than a week away, the tab still open: the player's API call mints the
    # next session, which is not "fresh" (this browser had loaded a page), so audio plays on.
    site.clock.advance(9 * 86400)
    browser.get("/api/tracks/8", sec_fetch_mode="cors", accept="application/json")
    after = codec.loads(browser.token or "")
    assert after is not None and after.id != first.id and after.state == "page"
    assert browser.audio(8).status_code == 206
    # A script that never loaded a page still gets a "fresh" session from the API, and no audio.
    script = site.browser(ip="198.51.100.9")
    script.get("/api/tracks/8", sec_fetch_mode="cors", accept="application/json")
    assert script.audio(8).status_code == 401
