"""Red team for graded trust: a scraper wants audio or the API through a tool's User-Agent, an
AI crawler wants its name past the matcher, a bot wants pages past its per-name budget.

Each attempt walks page, API, then audio with the cookie the page gave it, through the
middleware on the memory store (tests/support.py's ``walk``). What names itself a bot, a tool
or an AI agent gets no audio and no API, wherever in the string the name is put.
"""

from __future__ import annotations

from collections import Counter

import pytest
from support import _NAVIGATE, FakeClock, _call, run, walk

from guard.demo.app import create_app
from guard.identity.identify import Identifier
from guard.policy.rules import Policy
from guard.testing import http_scope

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
AI_NAMES = (
    "GPTBot",
    "ClaudeBot",
    "CCBot",
    "Bytespider",
    "PerplexityBot",
    "meta-externalagent",
    "OAI-SearchBot",
    "ChatGPT-User",
    "anthropic-ai",
    "Amazonbot",
    "cohere-ai",
    "Diffbot",
)


def _in_comment(name: str) -> str:
    return CHROME.replace("(Windows NT 10.0; Win64; x64)", f"({name}; Windows NT 10.0)")


def _positions(name: str) -> list[str]:
    """The places ``stands()`` forgives a public list's name: none of them forgives an AI agent's."""
    return [
        f"{name}/1.0",
        _in_comment(name),
        f"{CHROME} {name}/1.0",
        f"MyApp/1.0 (Android) {name}/2.0",
        f"MyApp/1.0 (Linux; Android 14) {name}/2.0",
    ]


def walks(policy: Policy, uas: list[str]) -> list[tuple[str, tuple[int, int, int]]]:
    app = create_app(policy, clock=FakeClock())

    async def main() -> list:
        return [await walk(app, ua, n) for n, ua in enumerate(uas)]

    return [(ua, tuple(w)) for ua, w in zip(uas, run(main()), strict=True)]


def through(policy: Policy, uas: list[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """The attempts that got the API or audio."""
    return [(ua, w) for ua, w in walks(policy, uas) if w[1] == 200 or w[2] in (200, 206)]


@pytest.mark.parametrize("name", AI_NAMES)
def test_an_ai_crawlers_name_is_refused_in_every_forgiven_position(policy: Policy, name: str) -> None:
    assert through(policy, _positions(name)) == []


# Lookalikes, case, separators, invisible characters: the folded alphabet reads them all.
DISGUISES = (
    "GPT-Bot",
    "G P T B o t",
    "GPT_Bot",
    "gptbot",
    "\uff27\uff30\uff34\uff22\uff4f\uff54",  # fullwidth
    "GPT\u200bBot",  # zero-width space
    "Claude\u200dBot",  # zero-width joiner
    "GPTB0t",
    "Claude-Bot",
    "CC-Bot",
    "Byte spider",
    "Perplexity Bot",
    "ClaudeB\u03bft",  # Greek omicron
)


@pytest.mark.parametrize("name", DISGUISES)
def test_a_disguised_ai_name_is_refused_in_every_position(policy: Policy, name: str) -> None:
    assert through(policy, _positions(name)[:3]) == []


def test_escaped_names_are_no_names_and_only_visitors(policy: Policy) -> None:
    """``GPT%42ot`` and ``GPT&#66;ot``: no client decodes a header, so these name nobody. They
    are unrecognised strings, visitors like any browser (a session, counted, challenged): the
    crawler gave up its name, and with it anything a name would have been allowed."""
    identifier = Identifier(policy.catalogue)
    for ua in ("GPT%42ot/1.0", "GPT&#66;ot/1.0", f"{CHROME} GPT%42ot/1.0"):
        assert identifier.from_user_agent(ua).category in ("http_client", "unknown")


BARE_TOOLS = (
    "python-requests/2.32",
    "curl/8.0",
    "Go-http-client/1.1",
    "okhttp/4.12",
    "aiohttp/3.9",
    "node-fetch/1.0",
    "axios/1.7",
    "undici",
    "Scrapy/2.11",
    "HeadlessChrome/120",
    "PhantomJS/2.1",
    "Playwright/1.4",
    "Puppeteer",
    "Java/17",
    "Wget/1.21",
    "libwww-perl/6.7",
    "Apache-HttpClient/4.5",
    "Dart/3.5 (dart:io)",
    "PostmanRuntime/7.3",
    "insomnia/2023",
    "HTTPie/3.2",
    "reqwest/0.11",
    "got (https://github.com/sindresorhus/got)",
    "Deno/1.40",
    "Bun/1.1",
    "python-httpx/0.27",
    "Python-urllib/3.11",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
)


def test_a_bare_tool_is_refused(policy: Policy) -> None:
    assert through(policy, list(BARE_TOOLS)) == []


# Tools the catalogue names wherever they stand (not ``leading`` names).
PLACED_TOOLS = (
    "python-requests/2.32",
    "curl/8.0",
    "Go-http-client/1.1",
    "okhttp/4.12",
    "aiohttp/3.9",
    "axios/1.7",
    "Scrapy/2.11",
    "HeadlessChrome/120",
    "Wget/1.21",
    "libwww-perl/6.7",
    "Apache-HttpClient/4.5",
    "PostmanRuntime/7.3",
    "reqwest/0.11",
    "python-httpx/0.27",
)


def test_a_word_in_front_of_a_tool_does_not_make_it_an_app(policy: Policy) -> None:
    """Regression: "Listener/1.0 python-requests/2.32" was the unnamed app "Listener" and its
    engine, a visitor served audio. A library after an app's product is that app's engine only
    when the string describes a platform, as apps' strings do (dd_apps stays served)."""
    assert through(policy, [f"Listener/1.0 {tool}" for tool in PLACED_TOOLS]) == []
    assert through(policy, [f"{CHROME} {tool}" for tool in PLACED_TOOLS]) == []
    # device-detector's "Go 1.1 package http" (Go's old default) and "KolibriOS libHTTP/1.1"
    # were visitors for the same reason; named tools now (tests/test_kinds.py).
    assert through(policy, ["Go 1.1 package http", "KolibriOS libHTTP/1.1"]) == []


def test_a_tool_after_a_platform_comment_is_an_apps_engine(policy: Policy) -> None:
    """The price of serving real apps ("DS podcast/1.0.5 (be.standaard.audio; build:6;
    Android 10) OkHttp/4.9.1"): a scraper that writes a whole app string is a visitor, counted
    like a browser (a session for audio, 200 tracks a day), not refused by its name."""
    identifier = Identifier(policy.catalogue)
    assert identifier.from_user_agent("X/1.0 (Linux; Android 14) okhttp/4.12").category == "http_client"
    assert identifier.from_user_agent("okhttp/4.12").category == "scraping_tool"


SELF_DECLARED = (
    "Foo/1.0 (Bot; Linux)",
    "Foo/1.0 (b0t)",  # regression: digits for letters passed the quick test unread
    "Foob0t/1.0",  # regression
    "FooCrawl3r/1.0",
    "Foo-S.p.i.d.e.r/1.0",
    "Foo/1.0 S-p-i-d-e-r",
    "Foo/1.0 crawl_er",
    "Foo/1.0 (+http://foo.example)",
    "Foo/1.0 (+ https://foo.example/bot)",
    "Foo/1.0 (mailto:ops@foo.example)",
)


def test_self_declared_words_with_tricks_are_refused(policy: Policy) -> None:
    assert through(policy, list(SELF_DECLARED)) == []


def test_obfuscated_contacts_name_nobody(policy: Policy) -> None:
    """``hxxp://``, "ops at foo dot example", ``foo[.]example``: no longer a contact anyone can
    use, so no declaration either; these strings are visitors, counted like a browser."""
    identifier = Identifier(policy.catalogue)
    for ua in ("Foo/1.0 (hxxp://foo.example)", "Foo/1.0 (ops at foo dot example)", "Foo/1.0 foo[.]example"):
        assert identifier.from_user_agent(ua).category == "http_client"


PREVIEWERS = (
    "FooPreview/1",
    "facebookexternalhit/1.1",
    "Twitterbot/1.0",
    "WhatsApp/2.23",
    "Discordbot/2.0",
    "TelegramBot (like TwitterBot)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    f"{CHROME} LinkPreview/1.0",
)


def test_previewers_get_pages_never_audio(policy: Policy) -> None:
    got = walks(policy, list(PREVIEWERS))
    assert [(ua, w) for ua, w in got if w[0] != 200 or w[1] == 200 or w[2] in (200, 206)] == []


def test_an_ai_crawler_calling_itself_a_preview_gets_no_audio(policy: Policy) -> None:
    """With the AI name as a word of its own it is refused everything; glued into one word
    ("GPTBotPreview") it is an unnamed previewer: pages under that name's budget, never audio."""
    uas = ["GPTBot preview/1.0", "ClaudeBot/1.0 (link preview)", f"{CHROME} GPTBot LinkPreview/1.0"]
    assert [(ua, w) for ua, w in walks(policy, uas) if w != (403, 403, 403)] == []
    assert walks(policy, ["GPTBotPreview/1.0"]) == [("GPTBotPreview/1.0", (200, 403, 403))]


def _pages(policy: Policy, user_agent_of, n: int) -> Counter[int]:
    """Statuses of ``n`` track pages (distinct tracks) from one address, within one minute."""
    app = create_app(policy, clock=FakeClock())

    async def main() -> Counter[int]:
        out: Counter[int] = Counter()
        for i in range(n):
            headers = [(b"host", b"music.example"), (b"user-agent", user_agent_of(i).encode()), *_NAVIGATE]
            status, _ = await _call(app, http_scope(f"/tracks/{i + 1}", "198.51.100.7", headers))
            out[status] += 1
        return out

    return run(main())


def test_one_previewer_name_from_one_address_reads_what_a_browser_does(policy: Policy) -> None:
    assert _pages(policy, lambda i: "FooPreview/1", 600)[200] == _pages(policy, lambda i: CHROME, 600)[200]


def test_rotating_previewer_names_read_no_more_than_a_browser(policy: Policy) -> None:
    """A new name every 100 pages ("Foo0Preview/1", "Foo1Preview/1", ...) from one address read
    920 track pages in a minute where a browser, rotating versions or not, reads 40: every key of
    an agent-keyed request had moved to the agent's hash tag, so each name started the address's
    counts afresh. Now only the agent's own count has its own tag."""
    rotating = _pages(policy, lambda i: f"Foo{i // 100}Preview/1", 2500)[200]
    browser = _pages(policy, lambda i: CHROME.replace("131.0.0.0", f"{100 + i // 100}.0.0.0"), 2500)[200]
    assert rotating <= browser
