"""Lookalike-proof matching: every AI token of the catalogue is still recognised when a
crawler disguises it (case, Unicode lookalikes, spacing, soft hyphens, zero-width joiners,
digit swaps, fullwidth forms, combining marks, a name split over two header lines), and no
real browser or media player is hit by the folding."""

from __future__ import annotations

import unicodedata

import pytest
from support import DATA, ROOT, browser_user_agents, run

from guard.demo.app import create_app
from guard.identity.catalogue import Catalogue
from guard.identity.lookalike import fold
from guard.identity.sync import read_snapshot, ua_token
from guard.policy.rules import Policy

AI = ("ai_training", "ai_search", "ai_assistant")

# Latin letters and a lookalike from another script (Cyrillic, Greek).
HOMOGLYPHS = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "B": "В", "T": "Т"}
HOMOGLYPHS |= {"H": "Н", "K": "К", "M": "М", "A": "Α", "O": "Ο", "P": "Ρ", "C": "С", "E": "Е", "s": "ѕ", "j": "ј"}
DIGITS = {"o": "0", "O": "0", "l": "1", "I": "1", "e": "3", "a": "4", "s": "5", "S": "5", "t": "7", "B": "8"}
SOFT_HYPHEN, ZWJ, ZWSP, WORD_JOINER = "\u00ad", "\u200d", "\u200b", "\u2060"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def disguises(token: str) -> dict[str, str]:
    """The ways a crawler could write ``token`` so that a byte comparison misses it."""
    middle = max(1, len(token) // 2)
    letters = [i for i, c in enumerate(token) if c.isalpha()]
    variants = {
        "lower": token.lower(),
        "upper": token.upper(),
        "homoglyphs": "".join(HOMOGLYPHS.get(c, c) for c in token),
        "one homoglyph": next(
            (token[:i] + HOMOGLYPHS[c] + token[i + 1 :] for i, c in enumerate(token) if c in HOMOGLYPHS), token
        ),
        "digit swaps": "".join(DIGITS.get(c, c) for c in token),
        "soft hyphen": token[:middle] + SOFT_HYPHEN + token[middle:],
        "zero-width joiners": ZWJ.join(token),
        "zero-width space and word joiner": token[:middle] + ZWSP + WORD_JOINER + token[middle:],
        "fullwidth": fullwidth(token),
        "combining marks": "".join(c + "\u0301" if c.isalpha() else c for c in token),
        "letter-spaced": " ".join(token),
        "dotted": ".".join(token),
        "mathematical bold": unicodedata.normalize("NFC", "".join(_bold(c) for c in token)),
    }
    if letters:  # a capital I for a small l, or the other way round, reads the same
        variants["case flips"] = "".join(c.swapcase() if i % 2 else c for i, c in enumerate(token))
    return variants


def _bold(c: str) -> str:
    if "A" <= c <= "Z":
        return chr(0x1D400 + ord(c) - ord("A"))
    if "a" <= c <= "z":
        return chr(0x1D41A + ord(c) - ord("a"))
    return c


def ai_tokens(catalogue: Catalogue) -> list[tuple[str, str]]:
    return [(a.name, t) for a in catalogue.agents if a.category in AI for t in a.ua_tokens]


def matched(catalogue: Catalogue, ua: str) -> str | None:
    hit = catalogue.match(ua.encode("utf-8"))  # as a client sends it: UTF-8 bytes
    return hit.agent.name if hit else None


def test_the_lookalikes_of_the_report_are_matched(policy: Policy) -> None:
    catalogue = policy.catalogue
    for ua in (
        "Mozilla/5.0 (compatible; GPTBоt/1.2; +https://openai.com/gptbot)",  # Cyrillic o
        "Mozilla/5.0 (compatible; G P T B o t/1.2)",
        "Mozilla/5.0 (compatible; GPT\u00adBot/1.2)",  # soft hyphen
    ):
        assert matched(catalogue, ua) == "GPTBot", ua
    assert matched(catalogue, "Mozilla/5.0 (compatible; C1audeBot/1.0; +claudebot@anthropic.com)") == "ClaudeBot"


def test_every_disguise_of_every_ai_token_is_matched(policy: Policy) -> None:
    catalogue = policy.catalogue
    misses = []
    for name, token in ai_tokens(catalogue):
        for how, disguised in disguises(token).items():
            for ua in (
                f"Mozilla/5.0 (compatible; {disguised}/1.0; +https://example.com/bot)",
                f"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; {disguised}/2.1)",
                f"{disguised}/3.0",
            ):
                got = matched(catalogue, ua)
                if got is None or catalogue.by_name(got).category not in AI:
                    misses.append((name, how, ua, got))
    assert not misses, f"{len(misses)} missed, e.g. {misses[:5]}"


def test_every_token_of_the_shipped_robots_json_is_matched_in_realistic_forms(policy: Policy) -> None:
    snapshot = read_snapshot(ROOT / "rules" / "ai-robots.json")
    assert len(snapshot.agents) >= 166
    catalogue = policy.catalogue
    misses = []
    for name in snapshot.agents:
        token = ua_token(name)
        for ua in (
            f"Mozilla/5.0 (compatible; {token}/1.0; +https://example.com/bot)",
            f"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; {token}/1.0; +https://example.com) "
            "Chrome/131.0.0.0 Safari/537.36",
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/131.0.0.0 Safari/537.36 {token}/0.9",
            f"{token}/2.0 (+https://example.com)",
        ):
            got = matched(catalogue, ua)
            if got is None or name.lower() not in {t.lower() for t in catalogue.by_name(got).robots_tokens}:
                misses.append((name, ua, got))
    assert not misses, misses[:10]


def test_a_name_split_over_two_user_agent_lines_is_still_the_name(policy: Policy) -> None:
    app = create_app(policy)

    async def status() -> int:
        import httpx

        transport = httpx.ASGITransport(app=app, client=("198.51.100.40", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            request = client.build_request("GET", "/tracks/1")
            request.headers.pop("user-agent", None)
            request.headers = httpx.Headers(
                [
                    *request.headers.multi_items(),
                    ("user-agent", "Mozilla/5.0 (compatible;"),
                    ("user-agent", "GPTBot/1.2)"),
                ]
            )
            return (await client.send(request)).status_code

    assert run(status()) == 403


def test_folding_never_makes_a_browser_or_a_media_player_an_ai_agent(policy: Policy) -> None:
    catalogue = policy.catalogue
    players = [line for line in (DATA / "media_player_user_agents.txt").read_text().splitlines() if line[:1] != "#"]
    hits = []
    for ua in browser_user_agents() + players:
        hit = catalogue.match(ua.encode("utf-8"))
        if hit is not None and hit.agent.category != "media_player":
            hits.append((ua, hit.agent.name))
    assert hits == []


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", "Bytespider"),
        ("Mozilla/5.0 (compatible; Bytеspider)", "Bytespider"),  # a lookalike still beats "Spider"
        ("Mozilla/5.0 (compatible; Spider/1.0; +https://spider.cloud)", "Spider"),
        ("Mozilla/5.0 (compatible; Sp1der/1.0)", "Spider"),
    ],
)
def test_word_boundaries_hold_in_the_folded_alphabet(policy: Policy, ua: str, expected: str) -> None:
    assert matched(policy.catalogue, ua) == expected


@pytest.mark.parametrize(
    "ua",
    [
        # Numbers fold to letters ("607" reads "got", "807" reads "bot"): a number alone never matches.
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/607.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; Eagle_807) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 "
        "Mobile Safari/537.36",
        # Words inside other words.
        "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) SpiderMonkey/1.0 Chrome/131.0.0.0 "
        "Mobile Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Cooperator/2.0 "
        "Version/17.4 Safari/605.1.15",
    ],
)
def test_numbers_and_words_inside_words_do_not_match(policy: Policy, ua: str) -> None:
    assert policy.catalogue.match(ua) is None


def test_the_folded_alphabet() -> None:
    assert fold("GPTBоt".encode()) == b"gptbot"
    assert fold("ＣｌａｕｄｅＢｏｔ".encode()) == b"claudebot"
    assert fold("ɢᴘᴛʙᴏᴛ".encode()) == b"gptbot"  # small capitals
    assert fold("GPT\u200b\u2060Bot\U000e0041".encode()) == b"gptbot"  # zero-width and tag characters
    assert fold(b"C1audeB0t") == b"claudebot"
    assert fold("GPTBot".encode("latin-1")) == b"gptbot"
