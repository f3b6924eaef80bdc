"""A real Scrapy crawler with GPTBot's User-Agent against the guarded demo on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import DATA, GPTBOT

from guard.testing import demo_process


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    with demo_process() as base:
        yield base


def crawl(base: str, tmp_path: Path, obey: bool) -> tuple[list[dict], dict]:
    items, stats = tmp_path / "items.json", tmp_path / "stats.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scrapy",
            "runspider",
            str(DATA / "content_spider.py"),
            "-O",
            str(items),
            "-s",
            f"USER_AGENT={GPTBOT}",
            "-s",
            f"ROBOTSTXT_OBEY={obey}",
            "-s",
            f"BASE={base}",
            "-s",
            f"STATS_FILE={stats}",
            "-s",
            "LOG_LEVEL=WARNING",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    return json.loads(items.read_text() or "[]"), json.loads(stats.read_text())


def test_spider_obeying_robots_txt_fetches_no_content(demo: str, tmp_path: Path) -> None:
    items, stats = crawl(demo, tmp_path, obey=True)
    assert items == []  # nothing fetched: every URL was dropped by Scrapy itself
    assert stats["robotstxt/forbidden"] == 6  # the home page and the five content URLs
    assert stats["robotstxt/response_status_count/200"] == 1  # it read our robots.txt


def test_spider_ignoring_robots_txt_is_blocked_on_every_content_request(demo: str, tmp_path: Path) -> None:
    items, _ = crawl(demo, tmp_path, obey=False)
    assert len(items) == 6
    assert {item["status"] for item in items} == {403}  # the home page too: GPTBot is refused everything
