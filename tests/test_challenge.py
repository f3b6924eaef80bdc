"""The proof-of-work challenge over real HTTP, and the ways a scraper would try to get past it:
replaying an answer, answering from elsewhere, precomputing, forging, rushing the wait.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from support import CHROME, NAVIGATE, RULES, FakeClock, Site, serving

from guard.demo.app import create_app
from guard.policy.limits import RateLimit
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings
from guard.sessions.challenge import Challenges, solves
from guard.sessions.gate import Reading
from guard.sessions.tokens import SessionCodec

KEY = "c" * 40
BITS = 8


@pytest.fixture(scope="module")
def shipped():
    return load_rules(RULES)


def make_site(shipped, clock: FakeClock, **changes):
    base = SessionSettings()
    settings = replace(base, challenge=replace(base.challenge, difficulty=BITS), **changes)
    return create_app(
        shipped, clock=clock, trusted_proxies=["127.0.0.1/32"], sessions=settings, session_keys=SessionKeys(KEY)
    )


@pytest.fixture
def site(shipped) -> Iterator[Site]:
    clock = FakeClock()
    app = make_site(shipped, clock)
    with serving(app) as base:
        yield Site(base, clock, app)


def challenge_of(page: httpx.Response) -> dict:
    """The challenge page's configuration: the answer URL's base, the token, the difficulty."""
    assert page.status_code == 403 and page.headers["x-guard-challenge"] == "proof-of-work"
    match = re.search(r"var C = (\{.*?\});", page.text)
    assert match, page.text[:300]
    return json.loads(match.group(1))


def solve(config: dict) -> str:
    """The answer URL, found the way the page's script finds it."""
    counter = 0
    while not solves(config["token"], str(counter), config["bits"]):
        counter += 1
    return f"{config['base']}&n={counter}"


def test_a_browser_without_a_session_gets_the_interstitial_solves_it_and_plays(site: Site) -> None:
    browser = site.browser()
    page = browser.page("/tracks/5/stream")
    config = challenge_of(page)
    assert config["bits"] == BITS
    assert 'name="robots" content="noindex"' in page.text
    answer = browser.get(solve(config), **NAVIGATE)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/tracks/5/stream"
    assert "HttpOnly" in answer.headers["set-cookie"]
    session = SessionCodec(SessionKeys(KEY)).loads(browser.token or "")
    assert session is not None and session.level(site.clock()) == "proven"
    assert browser.audio(5).status_code == 206


def test_a_non_navigation_gets_a_one_line_401_not_the_page(site: Site) -> None:
    r = site.browser().get("/tracks/5/stream", sec_fetch_mode="no-cors", accept="*/*")
    assert r.status_code == 401
    assert r.text.count("\n") == 1 and r.text.startswith("401 Unauthorized: ")
    assert "<html" not in r.text


def test_an_answer_is_accepted_once(site: Site) -> None:
    browser = site.browser()
    url = solve(challenge_of(browser.page("/tracks/5/stream")))
    assert browser.get(url).status_code == 303
    replay = site.browser(ip=browser.ip).get(url)  # the same answer, a fresh cookie jar
    assert replay.status_code == 403 and "already answered" in replay.text


def test_an_answer_from_another_network_or_device_is_refused(site: Site) -> None:
    browser = site.browser(ip="198.51.100.7")
    url = solve(challenge_of(browser.page("/tracks/5/stream")))
    elsewhere = site.browser(ip="203.0.113.7").get(url)
    assert elsewhere.status_code == 403 and "another client" in elsewhere.text
    other_device = site.browser("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", ip="198.51.100.7").get(url)
    assert other_device.status_code == 403 and "another client" in other_device.text
    assert browser.get(url).status_code == 303  # the refusals did not spend it


def test_a_challenge_issued_to_one_session_cannot_upgrade_another() -> None:
    keys = SessionKeys(KEY)
    codec = SessionCodec(keys)
    challenges = Challenges(SessionSettings().challenge, keys)
    now = FakeClock()()
    mine = codec.new(now, "windows", 4, "net-a")
    theirs = codec.new(now, "windows", 4, "net-a")

    def reading(session) -> Reading:
        return Reading(session, None, False, "windows", 4, "net-a")

    token = challenges.issue(reading(mine), now, difficulty=4)
    counter = next(str(n) for n in range(100000) if solves(token, str(n), 4))
    query = f"t={token}&n={counter}&next=/"
    assert challenges.check(query, reading(theirs), now).problem == "the challenge was issued to another session"
    assert challenges.check(query, reading(None), now).problem == "the challenge was issued to another session"
    assert challenges.check(query, reading(mine), now).problem is None


def test_a_wrong_or_malformed_answer_is_refused(site: Site) -> None:
    browser = site.browser()
    config = challenge_of(browser.page("/tracks/5/stream"))
    counter = 0
    while solves(config["token"], str(counter), config["bits"]):
        counter += 1
    for bad in (str(counter), "-1", "1e9", "9" * 40, ""):
        r = browser.get(f"{config['base']}&n={bad}")
        assert r.status_code == 403, bad
    assert browser.get(config["base"]).status_code == 403  # no answer at all
    assert browser.get("/.guard/challenge").status_code == 403


def test_an_answer_guard_fails_to_check_is_refused_not_a_500(site: Site, monkeypatch, caplog) -> None:
    from guard.sessions.service import Sessions

    async def broken(self, guard, scope):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    browser = site.browser()
    config = challenge_of(browser.page("/tracks/5/stream"))
    monkeypatch.setattr(Sessions, "answer", broken)
    r = browser.get(solve(config))
    assert r.status_code == 403 and "could not be checked" in r.text and "set-cookie" not in r.headers
    assert "refusing it" in caplog.text


def test_an_answer_in_digits_beyond_ascii_is_refused_not_a_500(site: Site) -> None:
    """Was: "٣" (Arabic-Indic three) and "²" pass ``isdigit()``, then hashing them as ASCII raised: 500."""
    browser = site.browser()
    config = challenge_of(browser.page("/tracks/5/stream"))
    for bad in ("%D9%A3", "%C2%B2", "%EF%BC%91", "1%D9%A3"):  # ٣, ², fullwidth 1
        r = browser.get(f"{config['base']}&n={bad}")
        assert r.status_code == 403 and "proof of work is wrong" in r.text, bad


def test_a_forged_or_edited_challenge_is_refused(site: Site) -> None:
    browser = site.browser()
    config = challenge_of(browser.page("/tracks/5/stream"))
    token = config["token"]
    payload, signature = token.rsplit(".", 1)
    easier = re.sub(r"~\d+~(?=[^~]+~[^~]+~[^~]+$)", "~0~", payload) + "." + signature  # difficulty 0
    forged = SessionKeys("f" * 40).signer("guard.challenge").sign(payload.replace(f"~{BITS}~", "~0~")).decode()
    for bad in (easier, forged):
        r = browser.get(f"/.guard/challenge?t={bad}&n=0&next=/")
        assert r.status_code == 403 and "not a challenge of this site" in r.text


def test_challenges_cannot_be_precomputed_or_kept(site: Site) -> None:
    browser = site.browser()
    first = challenge_of(browser.page("/tracks/5/stream"))
    second = challenge_of(browser.page("/tracks/5/stream"))
    assert first["token"] != second["token"]  # a fresh server nonce each time
    url = solve(first)
    site.clock.advance(301)
    late = browser.get(url)
    assert late.status_code == 403 and "expired" in late.text


def test_the_no_javascript_fallback_waits_the_checked_delay(site: Site) -> None:
    browser = site.browser()
    page = browser.page("/tracks/5/stream")
    refresh = re.search(r'<noscript><meta http-equiv="refresh" content="(\d+);url=([^"]+)"></noscript>', page.text)
    assert refresh, page.text[:500]
    delay, url = int(refresh.group(1)), refresh.group(2).replace("&amp;", "&")
    assert delay == 10 and "wait=1" in url
    early = browser.get(url)
    assert early.status_code == 403 and "before the wait" in early.text
    site.clock.advance(delay)
    done = browser.get(url)
    assert done.status_code == 303 and "set-cookie" in done.headers
    assert browser.audio(5).status_code == 206


@pytest.mark.parametrize("evil", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_the_return_path_stays_on_this_site(site: Site, evil: str) -> None:
    browser = site.browser()
    config = challenge_of(browser.page("/tracks/5/stream"))
    answer = parse_qs(urlsplit(solve(config)).query)["n"][0]
    r = browser.get("/.guard/challenge", params={"t": config["token"], "n": answer, "next": evil})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_answers_mint_no_more_sessions_than_the_minting_limit(shipped) -> None:
    clock = FakeClock()
    app = make_site(shipped, clock, mint_per_address=RateLimit(2, 3600, 2))
    with serving(app) as base:
        site = Site(base, clock, app)
        statuses = []
        for _ in range(4):
            browser = site.browser()  # a new cookie jar every time: a rotating scraper
            url = solve(challenge_of(browser.page("/tracks/5/stream")))
            statuses.append(browser.get(url).status_code)
        assert statuses == [303, 303, 429, 429]


def test_cookie_less_http_clients_get_no_audio(site: Site) -> None:
    for headers in ({"user-agent": CHROME}, {"user-agent": CHROME, **NAVIGATE}, {}):
        r = httpx.get(site.base + "/tracks/5/stream", headers=headers)
        assert r.status_code in (401, 403)
        assert not r.content.startswith(b"ID3")


# -- the rules: `sessions:` and `action: challenge` -------------------------------------------

RULES_WITH_CHALLENGES = """
version: 1
catalogue: {catalogue}
paths:
  health: [/healthz$]
  audio: ["/tracks/{{track}}/stream"]
  content_api: ["/api/tracks/{{track}}"]
  pages: ["/tracks/{{track}}", /]
exempt: [health]
sessions:
  issue: [pages, content_api]
  require: [audio]
  challenge: {{difficulty: 6, wait: 5s}}
rules:
  - id: fresh-session-audio
    match: {{path: audio, session: fresh}}
    action: challenge
    reason: this session has not loaded a page
  - id: hosting-browser
    match: {{category: unknown, network: hosting, path: [audio, content_api, pages]}}
    action: challenge
  - id: soft
    match: {{path: [audio, content_api, pages]}}
    limit: {{key: session, distinct: track, max: 3, per: 1h}}
    action: challenge
  - id: hard
    match: {{path: [audio, content_api, pages]}}
    limit: {{key: session, distinct: track, max: 6, per: 1h}}
    action: throttle
"""


@pytest.fixture
def ruled(tmp_path) -> Iterator[Site]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_WITH_CHALLENGES.format(catalogue=RULES.parent / "agents.yaml"))
    hosting = tmp_path / "ranges" / "hosting"
    hosting.mkdir(parents=True)
    (hosting / "examplecloud.json").write_text(
        json.dumps({"provider": "examplecloud", "source": "test", "prefixes": ["203.0.113.0/24"]})
    )
    clock = FakeClock()
    app = create_app(str(rules), clock=clock, trusted_proxies=["127.0.0.1/32"], session_keys=SessionKeys(KEY))
    with serving(app) as base:
        yield Site(base, clock, app)


def test_the_rules_switch_sessions_on(ruled: Site) -> None:
    browser = ruled.browser()
    assert "set-cookie" in browser.page("/tracks/1").headers
    assert browser.audio(1).status_code == 206
    assert ruled.browser(ip="198.51.100.99").audio(1).status_code == 401


def test_a_fresh_session_going_straight_for_audio_is_challenged(ruled: Site) -> None:
    script = ruled.browser()
    assert script.get("/api/tracks/1").status_code == 200  # minted a session, not on a page load
    r = script.audio(1)
    assert r.status_code == 401 and "this session has not loaded a page" in r.text
    script.page("/tracks/1")  # the page load makes it a browser's session
    assert script.audio(1).status_code == 206


def test_over_the_soft_limit_a_page_load_gets_the_challenge_and_audio_a_429(ruled: Site) -> None:
    browser = ruled.browser()
    for track in (1, 2, 3, 4):  # the first page has no session yet: tracks 2, 3, 4 are the session's
        assert browser.page(f"/tracks/{track}").status_code == 200
    audio = browser.audio(5)
    assert audio.status_code == 429 and audio.text.count("\n") == 1 and "retry-after" in audio.headers
    page = browser.page("/tracks/5")
    answer = browser.get(solve(challenge_of(page)))
    assert answer.status_code == 303 and answer.headers["location"] == "/tracks/5"
    # Proven: the challenge rules no longer apply; the hard limit (6) still does.
    assert browser.page("/tracks/5").status_code == 200
    assert browser.audio(5).status_code == 206
    assert browser.page("/tracks/6").status_code == 200
    assert browser.page("/tracks/7").status_code == 200
    assert browser.page("/tracks/8").status_code == 429  # the throttle, not another challenge
    assert "x-guard-challenge" not in browser.page("/tracks/8").headers


def test_a_browser_from_a_hosting_network_proves_itself_first(ruled: Site) -> None:
    vpn = ruled.browser(ip="203.0.113.40")
    page = vpn.page("/tracks/1")
    answer = vpn.get(solve(challenge_of(page)))
    assert answer.status_code == 303
    assert vpn.page("/tracks/1").status_code == 200
    assert vpn.audio(1).status_code == 206
    # Without a browser: no page, no session, no audio.
    assert httpx.get(ruled.base + "/tracks/1/stream", headers={"x-forwarded-for": "203.0.113.41"}).status_code == 401


def test_search_engines_and_the_health_check_are_never_challenged(ruled: Site) -> None:
    assert httpx.get(ruled.base + "/healthz", headers={"x-forwarded-for": "203.0.113.40"}).status_code == 200
