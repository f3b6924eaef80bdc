"""Graded trust on public corpora: real browsers, apps, TVs and consoles are served page, API and
audio; link previewers get pages, never audio; what names itself a tool or a bot is refused
audio and the API; an unnamed self-declared bot reads a few hundred titles, not the catalogue.

The corpora (tests/data/corpora, with their sources and dates) are device-detector's and
uap-core's test strings and the two previewer lists; each client walks page, then API, then
audio with the cookie the page gave it, in process.
"""

from __future__ import annotations

import pytest
from support import FakeClock, Visitor, corpus, run, walk

from guard.demo.app import create_app
from guard.identity.identify import Identifier
from guard.identity.kinds import UNKNOWN_BOT, UNKNOWN_PREVIEW, self_declared_name
from guard.policy.rules import Policy

# The share of each corpus served in full (page, API and audio), and what is left is listed in
# docs/identity.md: headless automation (HeadlessChrome, Splash), browsers that print a contact
# address, link previewers' bare names that the apps send too, and tools uap-core counts as no bot.
SERVED_AT_LEAST = {
    "dd_desktop_mobile": 0.999,
    "dd_tv_console_car": 0.999,
    "dd_apps": 0.985,
    # uap-core counts tools and monitors as no bots (curl, Wget, python-requests, RuxitSynthetic):
    # those are refused here, and they are most of the 0.5 % left.
    "uap_core": 0.994,
}
AI = ("ai_training", "ai_search", "ai_assistant")


def walk_all(policy: Policy, uas: list[str]) -> list:
    app = create_app(policy, clock=FakeClock())

    async def main() -> list:
        return [await walk(app, ua, n) for n, ua in enumerate(uas)]

    return run(main())


@pytest.mark.parametrize("name", sorted(SERVED_AT_LEAST))
def test_listeners_of_every_kind_are_served(policy: Policy, name: str) -> None:
    uas = corpus(name)
    walks = walk_all(policy, uas)
    served = sum(w.served for w in walks)
    missed = [(ua, tuple(w)) for ua, w in zip(uas, walks, strict=True) if not w.served]
    assert served / len(uas) >= SERVED_AT_LEAST[name], missed[:30]
    identifier = Identifier(policy.catalogue)
    # Whoever is refused is named or declares itself: an unrecognised string is never refused.
    refused = [ua for ua, w in zip(uas, walks, strict=True) if not w.served]
    unnamed = [ua for ua in refused if identifier.from_user_agent(ua).category in ("unknown", "http_client")]
    assert unnamed == []
    # Nobody is refused a page by identity alone, except AI agents.
    refused_pages = [ua for ua, w in zip(uas, walks, strict=True) if w.page != 200]
    assert all(identifier.from_user_agent(ua).category in AI for ua in refused_pages), refused_pages


def test_every_previewer_of_the_public_lists_gets_pages_never_audio(policy: Policy) -> None:
    uas = corpus("previews")
    identifier = Identifier(policy.catalogue)
    # Those the catalogue names as AI crawlers (Meta's, TikTok's) get no pages either: curated wins.
    # And crawler-user-agents lists Facebook's in-app browser (a listener's, "MetaIAB Facebook")
    # among previewers: left out in rules/agents.yaml's not_previews.
    previews = [ua for ua in uas if identifier.from_user_agent(ua).category not in AI and "MetaIAB" not in ua]
    assert len(previews) >= 130
    walks = walk_all(policy, previews)
    wrong = [(ua, tuple(w)) for ua, w in zip(previews, walks, strict=True) if w.page != 200 or not w.refused_content]
    assert wrong == []


def test_named_bots_and_tools_of_device_detector_are_refused_audio_and_the_api(policy: Policy) -> None:
    """device-detector's bot and library fixtures that name a bot or a tool (the catalogue knows
    the name, or the string declares itself): all refused. Strings that name nothing ("Hello
    World", "Chrome") are visitors under graded trust, reported in docs/identity.md."""
    identifier = Identifier(policy.catalogue)
    named = [
        ua
        for name in ("dd_bots", "dd_libraries")
        for ua in corpus(name)
        if ((i := identifier.from_user_agent(ua)).agent is not None and i.category != "media_player")
        or i.category in (UNKNOWN_BOT, UNKNOWN_PREVIEW)
    ]
    assert len(named) > 900
    walks = walk_all(policy, named)
    served = [ua for ua, w in zip(named, walks, strict=True) if not w.refused_content]
    assert served == []


def test_an_unnamed_bot_reads_a_few_hundred_titles_across_the_platform(policy: Policy) -> None:
    """Counted per bot name, not per address: rotating addresses does not buy more titles."""
    app = create_app(policy, clock=FakeClock())
    bot = "Mozilla/5.0 (compatible; TitleHarvestBot/2.0; +https://harvest.example/bot)"
    assert self_declared_name(bot) == "tltleharvestbot"

    async def main() -> list[int]:
        statuses = []
        for n in range(1, 341):
            visitor = Visitor(app, f"10.{n % 200}.{n // 200}.9", bot)  # a new address every page
            statuses.append((await visitor.get(f"/tracks/{n}")).status_code)
        return statuses

    statuses = run(main())
    assert statuses[:290] == [200] * 290  # a budget of 300 counted in HyperLogLog (~1%)
    # Past the budget, a new track that changes no register of the sketch is counted as seen
    # (the sketch's ~1%, under a budget key that is random per process): a few get through.
    assert statuses.count(200) <= 310 and statuses[-20:].count(403) >= 15


def test_an_unnamed_previewer_unfurls_pages(policy: Policy) -> None:
    app = create_app(policy, clock=FakeClock())
    ua = "AcmeChatLinkUnfurler/1.0"
    assert Identifier(policy.catalogue).from_user_agent(ua).category == UNKNOWN_PREVIEW

    async def main() -> list[int]:
        visitor = Visitor(app, "10.77.0.1", ua)
        return [(await visitor.get(p)).status_code for p in ("/tracks/3", "/api/tracks/3", "/tracks/3/stream")]

    assert run(main()) == [200, 403, 403]
