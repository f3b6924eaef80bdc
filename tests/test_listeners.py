"""Sessions that follow their listener, and a door for desktop players, over real HTTP on
both stores: a track plays on across network hand-offs, a tab left open past the
session's life plays on, a PWA whose page came from its service worker plays, a desktop
player plays a signed stream URL or an .m3u with no cookie. And what a scraper tries with
the same doors: a cookie copied across a farm of networks, the same-origin signal sent by
a script, a desktop player's User-Agent without a signed URL.

The guarded demo runs under uvicorn on loopback with an injected clock; client addresses
come in X-Forwarded-For from loopback, a trusted proxy here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from support import CHROME, RULES, FakeClock, Site, serving

from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings
from guard.sessions.tokens import SessionCodec

KEY = "k" * 40
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.6.1 Mobile/15E148 Safari/604.1"
)
IPHONE_MEDIA = "AppleCoreMedia/1.0.0.22H20 (iPhone; U; CPU OS 18_7 like Mac OS X; en_us)"
VLC = "VLC/3.0.20 LibVLC/3.0.20"
ITUNES = "iTunes/12.13.2 (Windows; Microsoft Windows 10 x64; x64) AppleWebKit/7619.1.15.11"
FOOBAR = "foobar2000/2.1"
#: What a page's own fetch() says (a PWA's script, its page served by its service worker).
SAME_ORIGIN = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}
JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def shipped():
    return load_rules(RULES)


def guarded(shipped, store) -> Iterator[Site]:
    """The guarded demo on ``shipped`` rules, counting in ``store`` (None: its own memory store)."""
    clock = FakeClock()
    base = SessionSettings()
    sessions = replace(base, challenge=replace(base.challenge, difficulty=8))
    app = create_app(
        shipped,
        store=store,
        clock=clock,
        trusted_proxies=["127.0.0.1/32"],
        sessions=sessions,
        session_keys=SessionKeys(KEY),
        reload_interval=0,
    )
    with serving(app) as url:
        yield Site(url, clock, app)
    if hasattr(store, "stats"):
        assert store.stats.fallbacks == 0  # every decision was Redis's


@pytest.fixture(params=["memory", "redis"])
def site(request, shipped) -> Iterator[Site]:
    """The guarded demo on the shipped rules, counting in memory or in the tests' Redis."""
    store = None
    if request.param == "redis":
        from guard.stores.redis import RedisStore

        store = RedisStore.from_url(request.getfixturevalue("redis_url"), timeout=2.0)
    yield from guarded(shipped, store)


def session_of(token: str | None):
    session = SessionCodec(SessionKeys(KEY)).loads(token or "")
    assert session is not None
    return session


def farm(site: Site, n: int) -> list[str]:
    """``n`` addresses of a residential proxy pool: one per /16, none in a hosting provider's ranges."""
    hosting = site.app.guard.hosting
    found = []
    for first in range(1, 224):
        if first in (10, 100, 127, 169, 172, 192, 198, 203):  # private, shared, loopback, documentation
            continue
        ip = f"{first}.{first * 7 % 256}.7.9"
        if hosting is None or hosting.provider(4, int(ipaddress.IPv4Address(ip))) is None:
            found.append(ip)
        if len(found) == n:
            return found
    raise AssertionError("not enough addresses outside the hosting ranges")


def max_age(response: httpx.Response) -> int:
    found = re.search(r"Max-Age=(\d+)", response.headers["set-cookie"])
    assert found is not None
    return int(found.group(1))


# -- a session follows its listener ----------------------------------------------------


def test_a_track_plays_on_across_network_hand_offs(site: Site) -> None:
    phone = site.browser(IPHONE_SAFARI, ip="198.51.100.7")  # home Wi-Fi
    assert phone.page().status_code == 200
    first = session_of(phone.token)
    hand_offs = [
        "198.51.100.7",  # the first Range requests at home
        "203.0.113.50",  # left Wi-Fi for 4G: another /24
        "100.64.20.9",  # the carrier's NAT gives another public address, in another /24
        "2001:db8:4::1",  # the 4G network is dual-stack: the player's next request goes over IPv6
        "2001:db8:4:1::9",  # a privacy address in the same /48
        "198.51.100.7",  # home again, over IPv4
        "2001:db8:77::5",  # home's IPv6
    ]
    for n, ip in enumerate(hand_offs):
        r = phone.get("/tracks/7/stream", user_agent=IPHONE_MEDIA, ip=ip, range=f"bytes={n * 1000}-{n * 1000 + 999}")
        assert r.status_code == 206, (ip, r.text)
    assert session_of(phone.token).id == first.id  # one session all along: the same budgets


def test_a_cookie_copied_across_a_farm_dies_within_a_handful_of_networks(site: Site) -> None:
    """One cookie over 40 /24s in 40 different /16s (a residential proxy pool): the first
    networks are served, the 13th is over the session's network budget, and from then on
    the cookie is refused everywhere, its first network included."""
    browser = site.browser(CHROME, ip="198.51.100.7")
    browser.page()
    token = browser.token
    served = []
    pool = farm(site, 40)
    for ip in pool:
        headers = {"user-agent": CHROME, "x-forwarded-for": ip, "cookie": f"guard_session={token}"}
        r = httpx.get(site.base + "/tracks/7/stream", headers={**headers, "range": "bytes=0-99"})
        assert r.status_code in (206, 403), r.text
        if r.status_code == 206:
            served.append(ip)
    assert served == pool[:12]  # the budget: 12 networks an hour
    home = browser.audio()
    assert home.status_code == 403 and "banned" in home.text  # the cookie is dead, at home too
    site.clock.advance(3600)  # the hour's budget has freed up; the day's ban has not
    assert browser.audio().status_code == 403


def test_a_tab_left_open_past_the_sessions_life_plays_on(site: Site) -> None:
    browser = site.browser()
    page = browser.page()
    first = session_of(browser.token)
    life = SessionSettings().ttl
    assert max_age(page) == life + 2 * SessionSettings().grace  # the browser keeps it through the grace
    assert browser.audio().status_code == 206
    site.clock.advance(life + 12 * 3600)  # the tab stayed open overnight, and then some
    r = browser.audio()  # the player's next Range request, no page or API call before it
    assert r.status_code == 206, r.text
    renewed = session_of(browser.token)
    assert renewed.id == first.id and renewed.issued_at == int(site.clock())  # renewed: the same session
    assert browser.audio(8).status_code == 206
    site.clock.advance(life + 3600)  # and again the next night
    assert browser.get("/api/tracks/9", sec_fetch_mode="cors", **JSON).status_code == 200
    assert session_of(browser.token).id == first.id
    assert browser.audio(9).status_code == 206

    # Away for longer than the grace, the tab still open: the cookie is still sent (its
    # Max-Age has a second grace), so the player's next API call mints a session that
    # starts as "page", not "fresh", and the audio plays without a challenge.
    site.clock.advance(life + SessionSettings().grace + 3600)
    expired = browser.audio(9)
    assert expired.status_code == 401 and "expired" in expired.text
    assert browser.get("/api/tracks/10", sec_fetch_mode="cors", **JSON).status_code == 200
    after = session_of(browser.token)
    assert after.id != first.id and after.state == "page"
    assert browser.audio(10).status_code == 206


def test_a_fresh_session_is_not_kept_alive_by_the_grace(site: Site) -> None:
    """Only a session that loaded a page is renewed past its life: an API client's fresh one ends."""
    script = site.browser(ip="192.0.2.80")
    script.get("/api/tracks/3", sec_fetch_mode="cors", **JSON)
    assert session_of(script.token).state == "fresh"
    site.clock.advance(SessionSettings().ttl + 60)
    r = script.audio(3)
    assert r.status_code == 401 and "expired" in r.text


# -- a page served by a service worker ------------------------------------------------


def test_a_pwa_page_from_its_service_worker_gets_a_session_whose_audio_plays(site: Site) -> None:
    """The page never reaches the server (the service worker answers it from its cache): the
    server sees the page's own fetches, same-origin, and then the audio."""
    pwa = site.browser(IPHONE_SAFARI, ip="203.0.113.30")
    first = pwa.get("/api/tracks/21", **SAME_ORIGIN, **JSON)  # the catalogue call mints a session
    assert first.status_code == 200 and session_of(pwa.token).state == "fresh"
    upgraded = pwa.get("/api/tracks/22", **SAME_ORIGIN, **JSON)  # the next call: the page's own
    assert "set-cookie" in upgraded.headers and session_of(pwa.token).state == "page"
    r = pwa.get("/tracks/22/stream", user_agent=IPHONE_MEDIA, range="bytes=0-999")
    assert r.status_code == 206, r.text


def test_the_same_origin_signal_opens_no_cheap_door(site: Site) -> None:
    """A script can send Sec-Fetch-Site too. It only upgrades a session the client already
    has (minted, and counted, like any other), from the API or a page, never from the audio;
    the upgraded session is the same one, with the same budgets."""
    script = site.browser(CHROME, ip="192.0.2.90")
    # Straight to the audio, claiming same-origin: no session, nothing minted.
    r = script.get("/tracks/5/stream", **SAME_ORIGIN)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    # The first API call mints a fresh session, however the request is dressed: not a page's.
    script.get("/api/tracks/5", **SAME_ORIGIN, **JSON)
    fresh = session_of(script.token)
    assert fresh.state == "fresh"
    refused = script.get("/tracks/5/stream", **SAME_ORIGIN)  # the audio request does not upgrade it
    assert refused.status_code == 401 and "not loaded a page" in refused.text
    assert session_of(script.token).state == "fresh"
    # Without Sec-Fetch-Site: same-origin (a cross-site or hand-made fetch) the API does not either.
    script.get("/api/tracks/5", sec_fetch_site="cross-site", sec_fetch_mode="cors", **JSON)
    assert session_of(script.token).state == "fresh"
    script.get("/api/tracks/5", **SAME_ORIGIN, **JSON)
    upgraded = session_of(script.token)
    assert upgraded.state == "page" and upgraded.id == fresh.id  # the same session: its budgets, its mint

    # Over its minting limit, an address gets no session to upgrade: the signal mints none.
    tight = site.browser(CHROME, ip="192.0.2.91")
    minted = 0
    for n in range(40):
        jar = httpx.Client(base_url=site.base)
        headers = {"user-agent": CHROME, "x-forwarded-for": tight.ip, **SAME_ORIGIN, **JSON}
        minted += "set-cookie" in jar.get(f"/api/tracks/{n + 1}", headers=headers).headers
    assert minted == SessionSettings().mint_per_address.burst


# -- desktop players ------------------------------------------------------------------


@pytest.mark.parametrize("player", [VLC, ITUNES, FOOBAR], ids=["vlc", "itunes", "foobar2000"])
def test_a_desktop_player_plays_a_signed_stream_url_and_an_m3u_with_no_cookie(site: Site, player: str) -> None:
    browser = site.browser(CHROME, ip="198.51.100.40")
    browser.page("/tracks/31")
    track = browser.get("/api/tracks/31", sec_fetch_mode="cors", **JSON).json()
    assert track["stream_url"].startswith("/tracks/31/stream?guard_sig=")
    desktop = httpx.Client(base_url=site.base)  # shares no browser's cookies
    on_this_machine = {"user-agent": player, "x-forwarded-for": browser.ip}
    r = desktop.get(track["stream_url"], headers={**on_this_machine, "range": "bytes=0-4095"})
    assert r.status_code == 206 and r.content.startswith(b"ID3")

    playlist = browser.get(track["playlist"])  # the page's link, downloaded by the browser
    assert playlist.status_code == 200 and playlist.headers["content-type"].startswith("audio/x-mpegurl")
    lines = playlist.text.splitlines()
    assert lines[0] == "#EXTM3U" and lines[1].startswith("#EXTINF:")
    entry = lines[2]
    assert entry.startswith(site.base + "/tracks/31/stream?guard_sig=")
    assert httpx.get(entry, headers=on_this_machine).status_code == 200  # the player opens the .m3u
    assert desktop.get(entry.replace("/31/", "/32/"), headers=on_this_machine).status_code == 401  # one track


@pytest.mark.parametrize("player", [VLC, ITUNES, FOOBAR], ids=["vlc", "itunes", "foobar2000"])
def test_a_desktop_player_without_a_signed_url_is_told_how_to_get_one(site: Site, player: str) -> None:
    headers = {"user-agent": player, "x-forwarded-for": "198.51.100.41", "range": "bytes=0-99"}
    r = httpx.get(site.base + "/tracks/31/stream", headers=headers)
    assert r.status_code == 401, r.text  # never 403: a person with a player, not a bot
    assert r.text.count("\n") == 1 and r.text.endswith("\n")
    assert r.text.startswith("401 Unauthorized: ") and ".m3u" in r.text and "browser" in r.text
    # The playlist itself, opened by the player without the browser's session: the same kind of line.
    m3u = httpx.get(site.base + "/tracks/31/playlist.m3u", headers=headers)
    assert m3u.status_code == 401 and m3u.text.count("\n") == 1 and "/tracks/31" in m3u.text
    # A browser whose session never loaded a page gets no signed URL either.
    script = site.browser(CHROME, ip="198.51.100.42")
    assert script.get("/api/tracks/31", sec_fetch_mode="cors", **JSON).json()["stream_url"] is None


def test_a_signed_stream_url_counts_as_its_listeners_session(site: Site) -> None:
    """A signed URL copied to a farm is one listener's session on many networks: it meets the
    session's network budget, and then the listener's own cookie is refused too."""
    browser = site.browser(CHROME, ip="198.51.100.50")
    browser.page("/tracks/40")
    url = browser.get("/api/tracks/40", sec_fetch_mode="cors", **JSON).json()["stream_url"]
    statuses = [
        httpx.get(site.base + url, headers={"user-agent": VLC, "x-forwarded-for": ip}).status_code
        for ip in farm(site, 20)
    ]
    assert statuses.count(200) == 12 and statuses[12:] == [403] * 8  # 12 networks an hour, then banned
    assert browser.audio(40).status_code == 403


# -- the stores: a session's own counters and bans ------------------------------------


def test_a_sessions_ban_under_its_own_tag_and_a_clients_under_its_network_are_both_found(
    shipped, make_store, one_loop
) -> None:
    """A session's counters live under its own hash tag, the rest under the client's network:
    each store keeps one marker per tag, and a ban under either is found by a process that
    has not seen it (no local memory of the ban), with nothing banned under the other."""
    from guard.identity.address import ClientResolver
    from guard.policy.engine import Guard
    from guard.sessions.tokens import Session

    store, clock = make_store(), FakeClock()
    resolver = ClientResolver()
    shared = Session("shared-cookie", clock(), "page", platform="windows")

    async def audio(guard: Guard, ip: str, session: Session, track: int = 7):
        client = resolver.resolve({"client": (ip, 1), "headers": []})
        return await guard.decide(guard.facts(client, CHROME, f"/tracks/{track}/stream", session=session))

    async def main() -> None:
        farm_guard = Guard(shipped, store, clock=clock)
        pool = [f"{n}.{n}.7.9" for n in (11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)]
        decisions = [await audio(farm_guard, ip, shared) for ip in pool]
        assert [d.action for d in decisions] == ["allow"] * 12 + ["block"]
        assert decisions[-1].rule_id == "session-networks" and decisions[-1].banned
        # Other instances (no local memory of the ban): it is found under the session's tag,
        # from networks it had counted, where nothing is banned.
        for ip in (pool[0], pool[5]):
            found = await audio(Guard(shipped, store, clock=clock), ip, shared)
            assert found.action == "block" and found.rule_id == "session-networks", ip
        other = Guard(shipped, store, clock=clock)
        # A listener's session on that first network is not touched by the farm's ban.
        listener = Session("a-listener", clock(), "page", platform="windows")
        assert (await audio(other, pool[0], listener)).allowed

        # The other way round: a device banned on its network (track-sprint: 40 tracks a
        # minute) is found by a fresh instance while nothing is banned under its session's tag.
        walker = Session("a-walker", clock(), "page", platform="windows")
        sprint = Guard(shipped, store, clock=clock)
        for track in range(100, 200):
            last = await audio(sprint, "82.3.4.5", walker, track)
            if last.banned:
                break
        assert last.banned and last.rule_id == "track-sprint"
        fresh = Guard(shipped, store, clock=clock)
        again = await audio(fresh, "82.3.4.5", walker, 300)
        assert again.action == "block" and again.rule_id == "track-sprint"

    one_loop(main())


def test_on_a_redis_cluster_a_sessions_counters_stay_in_the_requests_slot(shipped) -> None:
    """A cluster runs one script call in one slot: there a session's counters keep the
    client's network tag (and count per widest network level) instead of their own."""
    from redis.cluster import key_slot

    from guard.identity.address import ClientResolver
    from guard.policy.engine import Guard
    from guard.sessions.tokens import Session
    from guard.stores.memory import MemoryStore

    class ClusterLike(MemoryStore):
        cluster = True

    session = Session("a-listener", 0.0, "page", platform="windows")
    client = ClientResolver().resolve({"client": ("198.51.100.9", 1), "headers": []})
    for store, slots in ((ClusterLike(), 1), (MemoryStore(), 2)):
        guard = Guard(shipped, store)
        facts = guard.facts(client, CHROME, "/tracks/7/stream", session=session)
        checks = guard.checks(facts, shipped.plan(*facts.plan_key).limits)
        assert len({key_slot(c.key.encode()) for c in checks}) == slots
        assert any(c.key.endswith(":session-networks:s:a-listener") for c in checks)
