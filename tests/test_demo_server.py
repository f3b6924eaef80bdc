"""The demo as a newcomer runs it: ``guard demo`` under uvicorn, driven over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support import CHROME, GPTBOT, NAVIGATE

from guard.testing import demo_process


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    with demo_process("--trusted-proxy", "127.0.0.2/32") as base:
        yield base


def test_gptbot_is_refused_audio_with_the_rule_id(demo: str) -> None:
    r = httpx.get(demo + "/tracks/1/stream", headers={"user-agent": GPTBOT})
    assert r.status_code == 403
    assert "ai-training" in r.text


def test_a_browser_gets_the_audio_and_range_requests(demo: str) -> None:
    with httpx.Client(base_url=demo, headers={"user-agent": CHROME}) as browser:
        page = browser.get("/tracks/1", headers=NAVIGATE)  # the player's page sets the session
        assert page.status_code == 200 and "guard_session" in browser.cookies
        r = browser.get("/tracks/1/stream")
        assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
        assert r.content.startswith(b"ID3")
        part = browser.get("/tracks/1/stream", headers={"range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == r.content[100:200]


def test_robots_txt_tells_gptbot_the_rules(demo: str) -> None:
    r = httpx.get(demo + "/robots.txt", headers={"user-agent": GPTBOT})
    assert r.status_code == 200
    group = r.text.split("User-agent: GPTBot\n", 1)[1].split("\n\n", 1)[0]
    assert "Disallow: /" in group.splitlines()


def test_pages_and_api_answer(demo: str) -> None:
    home = httpx.get(demo + "/", headers={"user-agent": CHROME})
    assert home.status_code == 200 and 'href="/tracks/1"' in home.text
    api = httpx.get(demo + "/api/tracks/42", headers={"user-agent": CHROME})
    assert api.json()["id"] == 42
