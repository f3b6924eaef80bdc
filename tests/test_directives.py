"""The published opt-out signals, read by real consumers, and robots.txt held to."""

from __future__ import annotations

import dataclasses
import json
import urllib.robotparser
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from protego import Protego
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import CHROME, GPTBOT, FakeClock, Visitor, run

from guard.demo.app import create_app
from guard.middleware import GuardMiddleware
from guard.signals.directives import ROBOTS_LIMIT, robots_txt
from guard.signals.robots_matcher import RobotsTxt

CONTENT = ["/tracks/1/stream", "/tracks/99999/stream", "/api/tracks/1", "/api/tracks/42?fields=all", "/audio/x.mp3"]
PAGES = ["/", "/tracks/1", "/tracks/77"]
AI = ("ai_training", "ai_search", "ai_assistant")


def served_robots(policy) -> str:
    r = run(Visitor(create_app(policy, clock=FakeClock()), "198.51.100.1", GPTBOT).get("/robots.txt"))
    assert r.status_code == 200 and len(r.content) < ROBOTS_LIMIT
    return r.text


def ai_tokens(policy) -> list[str]:
    return [t for a in policy.catalogue.agents if a.category in AI for t in a.robots_tokens]


def engine_tokens(policy) -> list[str]:
    return [t for a in policy.catalogue.agents if a.category == "search_engine" for t in a.robots_tokens]


def test_protego_reads_the_promise(policy) -> None:
    parser = Protego.parse(served_robots(policy))
    for token in ai_tokens(policy):
        for path in CONTENT:
            assert not parser.can_fetch(f"https://music.example{path}", token), (token, path)
    for token in engine_tokens(policy):
        for path in PAGES:
            assert parser.can_fetch(f"https://music.example{path}", token), (token, path)
        assert not parser.can_fetch("https://music.example/tracks/1/stream", token)


def test_urllib_robotparser_reads_the_promise(policy) -> None:
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(served_robots(policy).splitlines())
    for token in ai_tokens(policy):
        for path in CONTENT:
            assert not parser.can_fetch(token, f"https://music.example{path}"), (token, path)
    for token in engine_tokens(policy):
        for path in PAGES:
            assert parser.can_fetch(token, f"https://music.example{path}"), (token, path)


def test_robots_txt_carries_the_ai_preference_and_sitemap(policy) -> None:
    text = robots_txt(dataclasses.replace(policy, sitemap="https://music.example/sitemap.xml", _plans={}))
    assert "Content-Usage: train-ai=n" in text
    assert text.rstrip().endswith("Sitemap: https://music.example/sitemap.xml")


def test_content_responses_carry_the_signals_and_tdmrep_is_served(policy) -> None:
    app = create_app(policy, clock=FakeClock())
    listener = Visitor(app, "198.51.100.2", CHROME)

    async def main() -> None:
        audio = await listener.get("/tracks/3/stream", headers={"range": "bytes=0-9"})
        assert audio.status_code == 206 and len(audio.content) == 10  # the body is untouched
        assert audio.headers["x-robots-tag"] == "noai, noimageai"
        assert audio.headers["content-usage"] == "train-ai=n"
        assert audio.headers["tdm-reservation"] == "1"
        tdm = await listener.get("/.well-known/tdmrep.json")
        assert tdm.headers["content-type"] == "application/json"
        assert json.loads(tdm.text) == [{"location": "/*", "tdm-reservation": 1}]
        assert "x-robots-tag" not in (await listener.get("/healthz")).headers

    run(main())


def test_each_signal_can_be_switched_off(policy) -> None:
    quiet = dataclasses.replace(policy, x_robots_tag=None, content_usage=None, tdmrep=False, _plans={})
    app = create_app(quiet, clock=FakeClock())
    listener = Visitor(app, "198.51.100.3", CHROME)

    async def main() -> None:
        r = await listener.get("/tracks/3")
        assert not {"x-robots-tag", "content-usage", "tdm-reservation"} & set(r.headers)
        assert (await listener.get("/.well-known/tdmrep.json")).status_code == 404
        assert "Content-Usage" not in (await listener.get("/robots.txt")).text

    run(main())


def owner_app() -> Starlette:
    async def robots(request):
        return PlainTextResponse("User-agent: *\nDisallow: /private/\n\nUser-agent: Googlebot\nDisallow: /drafts/\n")

    async def anything(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/robots.txt", robots), Route("/{rest:path}", anything)])


GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def test_the_apps_own_robots_txt_is_merged_and_enforced(policy, tmp_path: Path) -> None:
    upstream = dataclasses.replace(policy, merge_robots="upstream", _plans={})
    app = GuardMiddleware(owner_app(), upstream, clock=FakeClock())
    google = Visitor(app, "66.249.66.1", GOOGLEBOT)  # verified
    preview = Visitor(app, "198.51.100.4", "facebookexternalhit/1.1")
    browser = Visitor(app, "198.51.100.5", CHROME)

    async def main() -> None:
        text = (await browser.get("/robots.txt")).text
        assert "Disallow: /drafts/" in text and "Disallow: /private/" in text and "User-agent: GPTBot" in text
        assert (await google.get("/tracks/1")).status_code == 200
        blocked = await google.get("/drafts/next-album")
        assert blocked.status_code == 403 and "robots-txt" in blocked.text and "Disallow: /drafts/" in blocked.text
        assert (await google.get("/dr%61fts/next-album")).status_code == 403  # same path, other spelling
        assert (await preview.get("/private/x")).status_code == 403
        assert (await browser.get("/private/x")).status_code == 200  # robots.txt binds crawlers, not people

    run(main())

    file = tmp_path / "robots.txt"
    file.write_text("User-agent: *\nDisallow: /private/\n")
    from_file = GuardMiddleware(owner_app(), dataclasses.replace(policy, merge_robots=str(file), _plans={}))
    assert run(Visitor(from_file, "198.51.100.6", "facebookexternalhit/1.1").get("/private/x")).status_code == 403


def test_a_huge_app_robots_txt_is_cut_to_the_limit(policy) -> None:
    from guard.signals.directives import merge_robots

    theirs = "User-agent: *\n" + "".join(f"Disallow: /x{n}/\n" for n in range(60_000))
    merged = merge_robots(robots_txt(policy), theirs)
    assert len(merged.encode()) <= ROBOTS_LIMIT and "User-agent: GPTBot" in merged


# -- the matcher agrees with Protego --------------------------------------------------------

SEGMENTS = st.sampled_from(["a", "b", "ab", "A", "x.y", "%61", "%2F", "%2f", "%7E", "~", "é", "%C3%A9", "-", "_", "="])
PATTERN_PART = st.one_of(SEGMENTS, st.just("*"), st.just("/"))
PATH_PART = st.one_of(SEGMENTS, st.just("/"))


@st.composite
def pattern(draw) -> str:
    body = "/" + "".join(draw(st.lists(PATTERN_PART, max_size=5)))
    return body + ("$" if draw(st.booleans()) else "")


@st.composite
def url_path(draw) -> str:
    path = "/" + "".join(draw(st.lists(PATH_PART, max_size=6)))
    if draw(st.booleans()):
        path += "?" + "".join(draw(st.lists(SEGMENTS, max_size=3)))
    return path


# Each pattern is allowed, disallowed, or both (a tie: RFC 9309 says allow wins).
VERDICTS = st.sampled_from([("Allow",), ("Disallow",), ("Allow", "Disallow"), ("Disallow", "Allow")])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    rules=st.lists(st.tuples(VERDICTS, pattern()), min_size=1, max_size=6),
    paths=st.lists(url_path(), min_size=1, max_size=5),
)
def test_matcher_agrees_with_protego(rules: list[tuple[tuple[str, ...], str]], paths: list[str]) -> None:
    text = "User-agent: testbot\n" + "".join(f"{verdict}: {p}\n" for verdicts, p in rules for verdict in verdicts)
    ours = RobotsTxt.parse(text)
    theirs = Protego.parse(text)
    for path in paths:
        allowed, _ = ours.check(["testbot"], path)
        assert allowed == theirs.can_fetch(f"https://music.example{path}", "testbot"), (text, path)
