"""The crawler catalogue: every entry is recognised in a realistic User-Agent, and its
category decides what it gets; ordinary browsers are never mistaken for crawlers."""

from __future__ import annotations

import pytest
from support import browser_user_agents, run

from guard.identity.address import parse_ip
from guard.identity.catalogue import Catalogue, words
from guard.policy.rules import Policy

# Realistic shapes crawlers give their User-Agent: the "compatible" comment, a token
# appended to a full browser string, and a bare library-style product token.
TEMPLATES = (
    "Mozilla/5.0 (compatible; {token}/1.0; +https://example.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; {token}/2.1; +https://example.com/bot) "
    "Chrome/131.0.0.0 Safari/537.36",
    "{token}/3.2 (+https://example.com)",
)

# What the shipped rules promise each category, on audio and on a page. Written out
# here (not derived from the rules) so that a rules change that breaks a promise fails.
EXPECTED = {
    "ai_training": (403, 403),
    "ai_search": (403, 403),
    "ai_assistant": (403, 403),
    "search_engine": (403, 403),  # from outside its operator's shipped ranges: spoofed (see below)
    # Previews and monitors have no group of their own: robots.txt's `*` group keeps
    # crawlers off audio and the API, and guard holds identified crawlers to it.
    "social_preview": (403, 200),
    "monitoring": (403, 200),
    "seo": (403, 200),
    "archiver": (403, 200),
    "scraping_tool": (403, 200),
    "crawler": (403, 200),
    # A listener's player: served like a listener (and counted like one).
    "media_player": (200, 200),
}


def ua_cases(catalogue: Catalogue) -> list[tuple[str, str]]:
    cases = []
    for agent in catalogue.agents:
        if agent.listed:
            continue  # the public lists overlap: see test_every_listed_example_is_refused_audio
        if agent.example:
            cases.append((agent.name, agent.example))
        for token in agent.ua_tokens:
            cases += [(agent.name, t.format(token=token)) for t in TEMPLATES]
    return cases


def test_every_entry_is_detected_in_full_user_agents(policy: Policy) -> None:
    catalogue = policy.catalogue
    misses = []
    for name, ua in ua_cases(catalogue):
        hit = catalogue.match(ua)
        if hit is None or hit.agent.name != name:
            misses.append((name, ua, hit and hit.agent.name))
    assert not misses, misses[:10]


def test_every_listed_example_is_named_or_declares_itself(policy: Policy) -> None:
    """The public crawler lists' own example strings: each is named by some entry, or declares itself."""
    from guard.identity.identify import Identifier

    identifier = Identifier(policy.catalogue)
    examples = [a.example for a in policy.catalogue.agents if a.listed and a.example]
    assert len(examples) > 1000
    unnamed = [ua for ua in examples if identifier.from_user_agent(ua).category in ("unknown", "http_client")]
    assert len(unnamed) / len(examples) < 0.05, unnamed[:20]


def test_robots_txt_product_tokens_are_matched_too_and_every_crawler_has_robots_tokens(policy: Policy) -> None:
    # Google-Extended is a robots.txt token, yet crawler lists have seen it in User-Agents.
    hit = policy.catalogue.match("Mozilla/5.0 (compatible; Google-Extended/1.0; +http://www.google.com/bot.html)")
    assert hit is not None and hit.agent.name == "Google-Extended"
    assert all(a.ua_tokens for a in policy.catalogue.agents)
    # Only clients that are no crawlers (media players) have no robots.txt tokens.
    assert all(a.robots_tokens or a.category == "media_player" for a in policy.catalogue.agents)


def test_every_category_in_the_catalogue_has_an_expectation(policy: Policy) -> None:
    assert set(policy.catalogue.categories) == set(EXPECTED)


def test_category_decides_the_outcome(guarded) -> None:
    policy = guarded.app.guard.policy
    verifier = guarded.app.guard.identifier.verifier

    async def main() -> list:
        wrong = []
        # The curated entries (a listed one's example may name another of the overlapping lists).
        for n, agent in enumerate(a for a in policy.catalogue.agents if a.ua_tokens and not a.listed):
            ua = agent.example or TEMPLATES[0].format(token=agent.ua_tokens[0])
            visitor = guarded(f"203.0.113.{n % 250 + 1}", ua)
            if agent.verification and agent.verification.rdns_suffixes:
                # Let the background reverse DNS check finish (it refutes: no PTR record).
                client = guarded.app.guard.resolver.client(parse_ip(visitor.ip), visitor.ip)
                await guarded.app.guard.identifier.rdns.check(agent, client)
            audio = await visitor.get(f"/tracks/{n + 1}/stream", headers={"range": "bytes=0-1023"})
            page = await visitor.get(f"/tracks/{n + 1}")
            got = (403 if audio.status_code == 403 else 200, page.status_code)
            expected = EXPECTED[agent.category]
            checkable = agent.name.lower() in verifier.ranges or (
                agent.verification and agent.verification.rdns_suffixes
            )
            if agent.category == "search_engine" and not checkable:
                expected = (403, 200)  # unchecked claim: an ordinary visitor, held to its robots.txt group
            if got != expected:
                wrong.append((agent.name, agent.category, got))
            if audio.status_code == 403:
                assert "guard rule '" in audio.text
        return wrong

    assert run(main()) == []


def test_browser_user_agents_are_never_matched(policy: Policy) -> None:
    uas = browser_user_agents()
    assert len(uas) >= 300
    hits = [(ua, policy.catalogue.match(ua).agent.name) for ua in uas if policy.catalogue.match(ua)]
    assert hits == []


def test_browser_user_agents_are_never_blocked_on_a_single_request(guarded) -> None:
    async def main() -> list:
        bad = []
        for n, ua in enumerate(browser_user_agents()):
            visitor = guarded(f"10.{n // 250}.{n % 250}.9", ua)
            for path in (f"/tracks/{n + 1}/stream", f"/api/tracks/{n + 1}", f"/tracks/{n + 1}", "/"):
                r = await visitor.get(path, headers={"range": "bytes=0-99"} if "stream" in path else None)
                if r.status_code not in (200, 206):
                    bad.append((ua, path, r.status_code))
        return bad

    assert run(main()) == []


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", "Bytespider"),
        ("Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)", "Sogou"),
        ("Mozilla/5.0 (compatible; Spider/1.0; +https://spider.cloud)", "Spider"),
        ("Apache-HttpClient/4.5.14 (Java/17.0.9)", "Apache-HttpClient"),
        ("Mozilla/5.0 (compatible; GoogleOther-Image/1.0)", "GoogleOther-Image"),
        ("Mozilla/5.0 (compatible; gptbot/1.2)", "GPTBot"),  # case does not matter
        ("ChatGPT User agent fetch", "ChatGPT-User"),  # separators do not matter
    ],
)
def test_longest_whole_word_match_wins(policy: Policy, ua: str, expected: str) -> None:
    hit = policy.catalogue.match(ua)
    assert hit is not None and hit.agent.name == expected


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (X11; Linux x86_64) Codec/1.0 Chrome/131.0.0.0 Safari/537.36",  # "Code" inside a word
        "Mozilla/5.0 (Linux; Android 14) SpiderMonkey/1.0 Mobile Safari/537.36",  # "Spider" inside a word
        "Mozilla/5.0 (Macintosh) Cooperator/2.0 Safari/605.1.15",  # "Operator" inside a word
        "Mozilla/5.0 (Windows NT 10.0) JavaScriptEngine/3 Firefox/132.0",  # "Java" inside a word
        "Mozilla/5.0 (iPhone) Mobile/15E148 Curly/1.0",  # "curl" inside a word
    ],
)
def test_tokens_do_not_hit_inside_other_words(policy: Policy, ua: str) -> None:
    assert policy.catalogue.match(ua) is None


def test_words_split_on_anything_but_letters_and_digits_in_the_folded_alphabet() -> None:
    # Lower case, digits read as the letters they look like, i read as l (see lookalike.py).
    assert words("Mozilla/5.0 (compatible; GPTBot/1.2)") == ("mozllla", "s", "o", "compatlble", "gptbot", "l", "z")
