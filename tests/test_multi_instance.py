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
