"""User-Agents the catalogue does not name: browsers (by structure), self-declared bots
(``unknown_bot``, pages only) and unrecognised strings (``http_client``, visitors); named
libraries and tools, refused audio and the API; and named media players, served audio like
listeners but counted like them. Real strings from public corpora."""

from __future__ import annotations

from support import DATA, FakeClock, Visitor, browser_user_agents, run

from guard.demo.app import create_app
from guard.identity.identify import Identifier
from guard.identity.kinds import BROWSER, HTTP_CLIENT, UNKNOWN_BOT
from guard.policy.rules import Policy
from guard.sessions import SessionKeys, sign_stream_url
from guard.sessions.tokens import platform_of


def lines(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]


def category(policy: Policy, ua: str) -> str:
    return Identifier(policy.catalogue).from_user_agent(ua).category


# Invented self-declared bots: no list names them, each says it is automated.
INVENTED_BOTS = [
    "Mozilla/5.0 (compatible; Tunegrabber/2.3; +https://tunegrabber.example/bot)",
    "Mozilla/5.0 (compatible; HarmonyIndexBot/0.9)",
    "melodyminer-crawler/1.0",
    "SongSpider 4.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 "
    "LyricFetcher/1.2",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 (compatible; AudioAtlas/3.0; +http://audioatlas.example/about)",
    "datasetbuilder/0.4 (research; contact: data-team@lab.example)",
    "Beat_Scraper/7",
    "Mozilla/5.0 (compatible; ToneCrawl/1.0)",
    "catalog-robot/2.0",
    "Mozilla/5.0 (compatible; ѕоngBоt/1.0)",  # a bot word in lookalike letters
]


def test_browsers_are_browsers(policy: Policy) -> None:
    identifier = Identifier(policy.catalogue)
    wrong = [(ua, c) for ua in browser_user_agents() if (c := identifier.from_user_agent(ua).category) != BROWSER]
    assert wrong == []


# Strings of device-detector's library fixtures that name no tool the public lists know, or that
# are a device's own media stack, downloader or an app's SDK: visitors under graded trust (a
# session for audio, counted, budgets of their own), not refused by identity.
UNNAMED_LIBRARIES = {
    "containers/5.17.0 (github.com/containers/image)",
    "Android.LVLDM",  # Android's licence-verification download manager
    "php7.4",
    "localhost.localdomain/go-network-v2.0.1",
    "BIC Tracker",
    "Down/5.3.1",
    "KaiOS Downloader",  # the phone's own downloader
    "libsoup/2.68.2",  # GNOME's HTTP stack: Rhythmbox, GStreamer players
    "SafariViewService/8614.1.25.0.31 CFNetwork/1390 Darwin/22.0.0",  # Safari inside an iOS app
    "URL/Emacs Emacs/28.2 (TTY; x86_64-pc-linux-gnu)",  # Emacs's web browser
    "URL/Emacs Emacs/29.0.60 (OpenStep; x86_64-apple-darwin22.1.0)",
    "Libsyn4-peek",
    "Podcast Provider 0.34-9e9009e7 for Radio Downloader 0.34-9e9009e7",
    # An analytics SDK inside a watch app.
    *(f"Darwin/24.5.0 (Watch7,{n}; watchOS 11.4) MatomoTrackerSDK/7.7.0" for n in (8, 9, 10, 11)),
}


def test_named_libraries_and_tools_are_named(policy: Policy) -> None:
    clients = lines("http_client_user_agents.txt")
    assert len(clients) >= 30
    identifier = Identifier(policy.catalogue)
    wrong = [
        ua
        for ua in clients
        if ua not in UNNAMED_LIBRARIES
        and (i := identifier.from_user_agent(ua)).agent is None
        and i.category != UNKNOWN_BOT
    ]
    assert wrong == []
    # An unnamed one is a visitor, not a verdict.
    assert {identifier.from_user_agent(ua).category for ua in UNNAMED_LIBRARIES} == {HTTP_CLIENT}


def test_named_libraries_and_tools_are_stopped_on_audio_and_the_api(policy: Policy) -> None:
    app = create_app(policy, clock=FakeClock())

    async def main() -> list:
        served = []
        for n, ua in enumerate(u for u in lines("http_client_user_agents.txt") if u not in UNNAMED_LIBRARIES):
            visitor = Visitor(app, f"10.20.{n // 250}.{n % 250 + 1}", ua)
            audio = await visitor.get(f"/tracks/{n + 1}/stream", headers={"range": "bytes=0-99"})
            api = await visitor.get(f"/api/tracks/{n + 1}")
            if audio.status_code != 403 or api.status_code != 403:
                served.append((ua, audio.status_code, api.status_code))
        return served

    assert run(main()) == []


def test_invented_bots_get_pages_but_never_audio_or_the_api(policy: Policy) -> None:
    app = create_app(policy, clock=FakeClock())

    async def main() -> list:
        wrong = []
        for n, ua in enumerate(INVENTED_BOTS):
            visitor = Visitor(app, f"10.30.0.{n + 1}", ua)
            got = [
                (await visitor.get(path)).status_code
                for path in ("/robots.txt", "/", f"/tracks/{n + 1}", f"/api/tracks/{n + 1}", f"/tracks/{n + 1}/stream")
            ]
            if got != [200, 200, 200, 403, 403]:
                wrong.append((ua, got))
        return wrong

    assert run(main()) == []
    assert {category(policy, ua) for ua in INVENTED_BOTS} == {UNKNOWN_BOT}


def test_media_players_are_served_audio(policy: Policy) -> None:
    """Each player plays the way it gets a track: a device's media stack (AppleCoreMedia,
    stagefright, ExoPlayer, a Linux or Windows player) with the session the browser of its
    platform got on the track's page; a player whose User-Agent names no platform (VLC,
    foobar2000, Sonos, a Chromecast) shares no browser's session, and gets a signed stream URL."""
    players = lines("media_player_user_agents.txt")
    assert len(players) >= 100
    clock = FakeClock()
    keys = SessionKeys("k" * 40)
    app = create_app(policy, clock=clock, session_keys=keys)
    browsers: dict[str, str] = {}
    for ua in browser_user_agents():
        browsers.setdefault(platform_of(ua), ua)

    async def main() -> list:
        refused = []
        for n, ua in enumerate(players):
            # A household each: 237 new sessions in one /24 in the same second would meet the
            # sessions' mint_per_subnet burst (100), which is not what this test is about.
            ip, track = f"10.{40 + n // 250}.{n % 250}.1", f"/tracks/{n + 1}"
            browser = browsers.get(platform_of(ua))
            if browser is not None:
                page = Visitor(app, ip, browser)
                assert (await page.get(track)).status_code == 200 and "guard_session" in page.cookies
                visitor = Visitor(app, ip, ua)
                visitor.cookies = page.cookies  # the hand-off: the player sends the browser's cookie
                audio = await visitor.get(f"{track}/stream", headers={"range": "bytes=0-1023"})
            else:
                url = sign_stream_url(keys, f"{track}/stream", f"listener-{n}", expires_at=clock() + 600)
                visitor = Visitor(app, ip, ua, pages_first=False)
                audio = await visitor.get(url, headers={"range": "bytes=0-1023"})
            if audio.status_code not in (200, 206):
                refused.append((ua, audio.status_code, category(policy, ua)))
        return refused

    assert run(main()) == []


def test_a_media_player_gets_no_free_pass(policy: Policy) -> None:
    """Scrapers imitate players: one that walks the catalogue is stopped like anyone."""
    app = create_app(policy, clock=FakeClock())
    player = Visitor(app, "10.50.0.1", "AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)")

    async def main() -> list[int]:
        return [(await player.get(f"/tracks/{n}/stream")).status_code for n in range(1, 61)]

    statuses = run(main())
    assert statuses[0] == 200 and statuses[-1] in (403, 429)


def test_public_crawler_strings_are_seen_as_automated(policy: Policy) -> None:
    """The crawler-user-agents list (MIT): nearly every real crawler string is recognised.

    Those left look exactly like a browser (a monitoring service's headless Chrome with a
    product appended), and are counted like one.
    """
    instances = lines("crawler_user_agents.txt")
    identifier = Identifier(policy.catalogue)
    browsers = [ua for ua in instances if identifier.from_user_agent(ua).category == BROWSER]
    assert len(instances) > 2000 and len(browsers) / len(instances) < 0.04, browsers[:20]


APP_UA = "MusicPlatform/3.4.1 (iPhone; iOS 17.4; Scale/3.00) Alamofire/5.8.1"


def test_the_platforms_own_apps_are_allowed_by_an_apps_entry(tmp_path) -> None:
    import shutil

    from support import RULES

    from guard.policy.rules import load_rules

    for name in ("agents.yaml", "ai-robots.json", "crawler-lists.json"):
        shutil.copy(RULES.parent / name, tmp_path / name)
    text = RULES.read_text()
    (tmp_path / "without.yaml").write_text(text)
    apps = "apps:\n  - {name: Music iOS, ua: [MusicPlatform]}\n\n"
    (tmp_path / "with.yaml").write_text(text.replace("\nrules:\n", "\n" + apps + "rules:\n", 1))
    without, with_apps = load_rules(tmp_path / "without.yaml"), load_rules(tmp_path / "with.yaml")
    assert category(without, APP_UA) == HTTP_CLIENT
    assert category(with_apps, APP_UA) == "app"
    assert category(with_apps, "MusicPlatformer/1.0") == HTTP_CLIENT  # whole words only

    async def listen(policy: Policy, tracks: int) -> list[int]:
        app = Visitor(create_app(policy, clock=FakeClock()), "10.60.0.1", APP_UA)
        return [(await app.get(f"/tracks/{n}/stream")).status_code for n in range(1, tracks + 1)]

    # Unnamed, the app is a visitor like any browser (it loads the page, keeps the cookie)...
    assert run(listen(without, 1)) == [200]
    assert run(listen(with_apps, 1)) == [200]
    # ...and held to budgets like one.
    assert run(listen(without, 60))[-1] in (403, 429)
    walked = run(listen(with_apps, 60))  # a scraper copying the app's User-Agent is still counted
    assert walked[-1] in (403, 429)


def test_a_browser_shaped_string_still_shows_a_name_or_contact_in_its_platform_comment(policy: Policy) -> None:
    tail = " AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    assert category(policy, "Mozilla/5.0 (compatible; GPTBot/1.2)" + tail) == "ai_training"
    assert category(policy, "Mozilla/5.0 (compatible; GPTBоt/1.2)" + tail) == "ai_training"  # Cyrillic o
    assert category(policy, "Mozilla/5.0 (Windows NT 10.0; +https://bot.example)" + tail) == UNKNOWN_BOT
    assert category(policy, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)" + tail + " KimiBot/1.0") == "ai_training"
