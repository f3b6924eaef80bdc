"""Two app instances (uvicorn processes) sharing one Redis stop a scraper as early as one does."""

from __future__ import annotations

import httpx
from support import CHROME

from guard.testing import demo_process


def tracks_obtained(bases: list[str]) -> int:
    """Walk track ids, alternating between instances, until refused; return how many were served."""
    with httpx.Client(headers={"user-agent": CHROME}) as client:
        for track in range(1, 200):
            r = client.get(f"{bases[track % len(bases)]}/api/tracks/{track}")
            if r.status_code != 200:
                assert r.status_code in (403, 429)
                return track - 1
    return 199


def test_scraper_alternating_between_instances_is_stopped_like_against_one(redis_server, redis_url) -> None:
    with demo_process("--redis-url", redis_url) as a, demo_process("--redis-url", redis_url) as b:
        alone = tracks_obtained([a])
        redis_server.client().flushall()
        alternating = tracks_obtained([a, b])
    assert alone == alternating == 40


NAVIGATE = {"sec-fetch-mode": "navigate", "accept": "text/html"}
MEDIA = {"sec-fetch-mode": "no-cors", "accept": "*/*"}


def test_a_session_from_one_instance_plays_on_the_other_and_a_fresh_jar_meets_the_shared_hold(
    redis_server, redis_url
) -> None:
    shared = {"GUARD_SESSION_KEY": "s" * 40, "GUARD_BUDGET_KEY": "b" * 40}  # as every instance must share
    with (
        demo_process("--redis-url", redis_url, env=shared) as a,
        demo_process("--redis-url", redis_url, env=shared) as b,
        httpx.Client(headers={"user-agent": CHROME}) as browser,
    ):
        assert browser.get(f"{a}/tracks/1", headers=NAVIGATE).status_code == 200
        assert browser.cookies.get("guard_session")
        assert browser.get(f"{b}/tracks/1/stream", headers={**MEDIA, "range": "bytes=0-99"}).status_code == 206
        # Another instance with another key refuses the cookie: the key is what instances share.
        with demo_process("--redis-url", redis_url, env={"GUARD_SESSION_KEY": "o" * 40}) as other:
            refused = browser.get(f"{other}/tracks/1/stream", headers=MEDIA)
            assert refused.status_code == 401 and "not valid" in refused.text
        # Minting is counted in Redis: the address's 30 new sessions at once are shared by both.
        minted = 0
        for n in range(40):
            with httpx.Client(headers={"user-agent": CHROME}) as jar:
                jar.get(f"{(a, b)[n % 2]}/tracks/{n}", headers=NAVIGATE)
                minted += bool(jar.cookies.get("guard_session"))
        assert minted == 29  # the browser above took the first of the burst of 30
