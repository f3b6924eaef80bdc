"""What the challenge costs: the no-JavaScript wait is no cheaper than the proof of work.

A scraper that never hashes waits instead, and challenges cost nothing to ask for, so it
would wait out hundreds at once. Here the wait grows with the difficulty, a network redeems
only a few waits at once (then one per wait), and challenges outstanding per address and per
network are limited. An office of 30 without JavaScript behind one address still gets in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from support import RULES, FakeClock, Site, serving

from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings
from guard.sessions.challenge import Challenges
from guard.sessions.gate import Reading
from guard.sessions.settings import ChallengeSettings
from guard.stores.redis import RedisStore

KEY = "c" * 40
BITS = 8  # cheap to solve in the tests; the wait is still the configured 10 s (its floor)
REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+);url=([^"]+)">')


@pytest.fixture(scope="module")
def shipped():
    return load_rules(RULES)


def make_site(shipped, clock: FakeClock, store=None, **challenge) -> object:
    base = SessionSettings()
    settings = replace(base, challenge=replace(base.challenge, difficulty=BITS, **challenge))
    return create_app(
        shipped,
        store=store,
        clock=clock,
        trusted_proxies=["127.0.0.1/32"],
        sessions=settings,
        session_keys=SessionKeys(KEY),
    )


@pytest.fixture(params=["memory", "redis"])
def site(request, shipped) -> Iterator[Site]:
    clock = FakeClock()
    store = RedisStore.from_url(request.getfixturevalue("redis_url"), timeout=2.0) if request.param == "redis" else None
    with serving(make_site(shipped, clock, store)) as base:
        yield Site(base, clock, None)
    if store is not None:
        assert store.stats.fallbacks == 0  # every answer reached Redis


def no_script_answer(page: httpx.Response) -> tuple[int, str]:
    """The wait and the answer URL of a challenge page's no-JavaScript meta refresh."""
    assert page.status_code == 403 and page.headers["x-guard-challenge"] == "proof-of-work", page.text[:200]
    found = REFRESH.search(page.text)
    assert found, page.text[:500]
    return int(found.group(1)), found.group(2).replace("&amp;", "&")


def test_the_wait_grows_with_the_difficulty() -> None:
    """Each bit above 16 doubles the hashing a browser does, and so the wait."""
    challenges = Challenges(ChallengeSettings(difficulty=18, wait=10.0), SessionKeys(KEY))
    reading = Reading(None, None, False, "windows", 4, "net")
    token = challenges.issue(reading, 1000.0)
    wait, url = no_script_answer_of(challenges.page(token, "/tracks/1"))
    assert wait == 40
    query = url.split("?", 1)[1]
    assert challenges.check(query, reading, 1010.0).problem == "answered before the wait was over"
    answer = challenges.check(query, reading, 1040.0)
    assert answer.problem is None and answer.waited == 40.0
    assert Challenges(ChallengeSettings(difficulty=12), SessionKeys(KEY)).wait_for(12) == 10.0  # never below `wait`


def no_script_answer_of(page: bytes) -> tuple[int, str]:
    found = REFRESH.search(page.decode())
    assert found
    return int(found.group(1)), found.group(2).replace("&amp;", "&")


def test_waiting_out_many_challenges_at_once_gains_nothing(site: Site) -> None:
    """Thirty addresses of one /24 wait out thirty challenges together: ten get in after the
    wait, the others one per wait after that; a browser that hashes is never held up."""
    browsers = [site.browser(ip=f"198.51.100.{10 + n}") for n in range(30)]
    urls = [no_script_answer(b.page("/tracks/5/stream"))[1] for b in browsers]
    site.clock.advance(10)
    answers = [b.get(url) for b, url in zip(browsers, urls, strict=True)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(303) == 10 and statuses.count(429) == 20
    waiting = [b for b, a in zip(browsers, answers, strict=True) if a.status_code == 429]
    retry = int(answers[-1].headers["retry-after"])
    assert 1 <= retry <= 10
    refresh = REFRESH.search(answers[-1].text)
    assert refresh and int(refresh.group(1)) == retry  # a browser without JavaScript comes back by itself
    site.clock.advance(retry)
    again = [b.get(urls[browsers.index(b)]).status_code for b in waiting]
    assert again.count(303) == 1  # one more per wait

    solver = site.browser(ip="198.51.100.200")  # the same network, with JavaScript
    page = solver.page("/tracks/5/stream")
    config = re.search(r"var C = (\{.*?\});", page.text)
    assert config
    from test_challenge import solve

    assert solver.get(solve(__import__("json").loads(config.group(1)))).status_code == 303


def test_an_office_without_javascript_behind_one_address_gets_in(site: Site) -> None:
    """Thirty people, one address, no JavaScript, all at nine: each gets in within the
    challenge's five minutes by following the pages' own refreshes."""
    browsers = [site.browser(ip="198.51.100.50") for _ in range(30)]  # one managed browser, thirty cookie jars
    pending = {n: no_script_answer(b.page("/tracks/5/stream")) for n, b in enumerate(browsers)}
    due = {n: site.clock() + wait for n, (wait, _) in pending.items()}
    start, admitted = site.clock(), {}
    while pending and site.clock() - start <= 300:
        site.clock.advance(1)
        for n in [n for n in pending if due[n] <= site.clock()]:
            answer = browsers[n].get(pending[n][1])
            if answer.status_code == 303:
                admitted[n] = site.clock() - start
                del pending[n]
            else:
                assert answer.status_code == 429, answer.text
                due[n] = site.clock() + int(answer.headers["retry-after"])
    assert not pending and len(admitted) == 30
    assert max(admitted.values()) <= 300


def test_outstanding_challenges_are_limited_per_address_and_per_network(shipped) -> None:
    clock = FakeClock()
    with serving(make_site(shipped, clock, open_per_address=3, open_per_network=5)) as base:
        site = Site(base, clock, None)
        one = site.browser(ip="198.51.100.7")
        assert [one.page("/tracks/5/stream").status_code for _ in range(4)] == [403, 403, 403, 429]
        refused = one.page("/tracks/5/stream")
        assert refused.status_code == 429 and "var C" not in refused.text  # no challenge to wait out
        assert 1 <= int(refused.headers["retry-after"]) <= 300
        others = [site.browser(ip=f"198.51.100.{20 + n}").page("/tracks/5/stream").status_code for n in range(3)]
        assert others == [403, 403, 429]  # five for the /24 in all
        assert site.browser(ip="203.0.113.9").page("/tracks/5/stream").status_code == 403  # another network
        clock.advance(301)  # the first ones ran out
        assert one.page("/tracks/5/stream").status_code == 403
