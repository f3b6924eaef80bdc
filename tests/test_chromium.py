"""A real headless Chromium against the guarded demo under uvicorn on loopback: the
challenge page loads, its proof of work solves in the browser, and the audio plays.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/test installs them). Missing
browser: skipped on a developer machine, a failure in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from support import CHROME, RULES, FakeClock, serving

from guard.demo.app import audio_size, create_app
from guard.pacing import PacingSettings
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings
from guard.sessions.tokens import SessionCodec

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    # Headless Chromium names itself HeadlessChrome, which the catalogue rightly counts as
    # automation; the test stands for a person's browser.
    "--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
)
KEY = "b" * 40
BITS = 14  # about 16,000 hashes: a fraction of a second in the page's script


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) and os.access(path, os.X_OK)):
            return path
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} is not installed (scripts/test installs chromium and chromium-driver)")
        pytest.skip(f"{missing} is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="guard-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[tuple[str, FakeClock]]:
    clock = FakeClock()
    base_settings = SessionSettings()
    settings = replace(base_settings, challenge=replace(base_settings.challenge, difficulty=BITS))
    app = create_app(load_rules(RULES), clock=clock, sessions=settings, session_keys=SessionKeys(KEY))
    with serving(app) as base:
        yield base, clock


PLAYS = """
const done = arguments[arguments.length - 1];
const media = document.querySelector('audio, video');
if (!media) { done('no media element'); return; }
media.muted = true;
const report = () => done({state: media.readyState, error: media.error && media.error.code});
if (media.readyState >= 2) { report(); return; }
media.addEventListener('playing', report);
media.addEventListener('canplay', report);
media.addEventListener('error', report);
media.play().catch(() => {});
setTimeout(report, 20000);
"""


def session_cookie(driver) -> str | None:
    return next((c["value"] for c in driver.get_cookies() if c["name"] == "guard_session"), None)


def test_chromium_solves_the_challenge_and_the_audio_plays(browser, site) -> None:
    base, clock = site
    browser.delete_all_cookies()
    browser.get(base + "/tracks/5/stream")  # no session: the interstitial, then the audio
    result = browser.execute_async_script(PLAYS)
    assert browser.current_url == base + "/tracks/5/stream"
    assert isinstance(result, dict) and result["state"] >= 2 and result["error"] is None, result
    token = session_cookie(browser)
    session = SessionCodec(SessionKeys(KEY)).loads(token or "")
    assert session is not None and session.level(clock()) == "proven"  # the proof of work was accepted

    # The track page's own player, with the session the challenge set.
    browser.get(base + "/tracks/6")
    result = browser.execute_async_script(PLAYS)
    assert isinstance(result, dict) and result["state"] >= 2 and result["error"] is None, result

    # A plain HTTP client, without the browser's session, gets no audio.
    r = httpx.get(base + "/tracks/6/stream", headers={"user-agent": CHROME})
    assert r.status_code == 401 and not r.content.startswith(b"ID3")


def test_chromium_on_a_track_page_gets_a_session_without_a_challenge(browser, site) -> None:
    base, _ = site
    browser.delete_all_cookies()
    browser.get(base + "/tracks/8")
    assert browser.title != "One moment"
    result = browser.execute_async_script(PLAYS)
    assert isinstance(result, dict) and result["state"] >= 2 and result["error"] is None, result
    assert session_cookie(browser)


READY = """
const done = arguments[arguments.length - 1];
navigator.serviceWorker.ready.then(() => done(true), e => done(String(e)));
setTimeout(() => done('no service worker'), 20000);
"""

PWA_PLAYS = """
const done = arguments[arguments.length - 1];
const media = document.querySelector('audio');
media.muted = true;
const report = () => done({state: media.readyState, error: media.error && media.error.code,
                           controlled: !!navigator.serviceWorker.controller});
media.addEventListener('playing', report);
media.addEventListener('canplay', report);
media.addEventListener('error', report);
fetch('/api/tracks/12').then(() => play(12)).catch(() => {});  // the app's catalogue call, then the player
setTimeout(report, 20000);
"""


def test_chromium_plays_in_a_web_app_whose_page_its_service_worker_serves(browser, site) -> None:
    """An installed web app: its page comes from its service worker's cache, so the server
    never sees a navigation. Its same-origin fetches upgrade the session they mint, and its
    player plays."""
    base, clock = site
    browser.get(base + "/app")  # installed once, online: the service worker caches the page
    assert browser.execute_async_script(READY) is True
    browser.delete_all_cookies()  # a later launch, with no session left
    browser.get(base + "/app")
    assert session_cookie(browser) is None  # the page came from the cache: nothing reached the server
    result = browser.execute_async_script(PWA_PLAYS)
    assert isinstance(result, dict) and result["controlled"], result
    assert result["state"] >= 2 and result["error"] is None, result
    session = SessionCodec(SessionKeys(KEY)).loads(session_cookie(browser) or "")
    assert session is not None and session.level(clock()) == "page"  # upgraded, no challenge solved


@pytest.fixture
def paced_site() -> Iterator[tuple[str, object]]:
    """The demo with a slow pace: track 5's 301,739 bytes take about 4.5 seconds to come, at 128 kbps
    times 4 after a 1-second buffer."""
    settings = replace(SessionSettings(), challenge=replace(SessionSettings().challenge, difficulty=BITS))
    policy = replace(load_rules(RULES), pacing=PacingSettings(frozenset({"audio"}), 4.0, 1.0, 128_000.0))
    app = create_app(policy, sessions=settings, session_keys=SessionKeys(KEY))
    app.pacer.sleep = asyncio.sleep  # in real time (the suite's default does not wait)
    with serving(app) as base:
        yield base, app


def test_chromium_plays_paced_audio_before_it_has_all_come(browser, paced_site) -> None:
    """Pacing slows the body, never breaks it: the <audio> element plays while most of the
    track is still on its way, with no media error."""
    base, app = paced_site
    browser.delete_all_cookies()
    browser.get(base + "/tracks/5")
    result = browser.execute_async_script(PLAYS)
    assert isinstance(result, dict) and result["state"] >= 2 and result["error"] is None, result
    stats = app.pacer.stats
    assert stats.responses >= 1 and stats.waits >= 1  # paced: it waited between pieces
    assert stats.sent < audio_size(5)  # playing, and the track not yet all sent
    browser.get(base + "/")  # stop the player before the next test
