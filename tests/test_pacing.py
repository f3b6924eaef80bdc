"""Audio at playback pace: the body is paced, never refused, and the budget is the session's.

The unit tests drive the pacer with an injected clock and sleep (the sleep moves the clock),
so they are instant and exact. One real-HTTP test runs the guarded demo under uvicorn with
a fast pace, and checks the bytes and the time they took; the real Chromium test with an
``<audio>`` element is in tests/test_chromium.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from support import CHROME, RULES, FakeClock, serving

from guard.demo.app import audio_bytes, audio_size, create_app
from guard.errors import ConfigError
from guard.pacing import Pacer, PacingSettings, bytes_per_second
from guard.policy.rules import load_rules

SETTINGS = PacingSettings(frozenset({"audio"}), multiple=4.0, buffer=30.0, bitrate=320_000.0)


class Sleeper:
    """The pacer's sleep: advances the test's clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)


def pacer() -> tuple[Pacer, FakeClock]:
    clock = FakeClock(1000.0)
    return Pacer(clock=clock, sleep=Sleeper(clock)), clock


async def respond(paced, status: int, headers: list[tuple[bytes, bytes]], body: list[bytes]) -> None:
    await paced({"type": "http.response.start", "status": status, "headers": headers})
    for i, chunk in enumerate(body):
        await paced({"type": "http.response.body", "body": chunk, "more_body": i < len(body) - 1})


def track_headers(size: int, seconds: float) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(size).encode()), (b"X-Content-Duration", str(seconds).encode())]


class Collect:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message) -> None:
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


def paced_send(p: Pacer, key: str, sink: Collect, settings: PacingSettings = SETTINGS):
    from guard.pacing import _PacedSend

    return _PacedSend(p, sink, settings, key)


def test_a_track_takes_its_length_less_the_buffer_over_the_multiple() -> None:
    p, clock = pacer()
    size, seconds = 4_000_000, 200.0  # 20,000 bytes a second of audio
    body = [bytes([i % 251]) * 65536 for i in range(size // 65536)] + [b"x" * (size % 65536)]
    sink = Collect()
    asyncio.run(respond(paced_send(p, "s:a", sink), 200, track_headers(size, seconds), body))
    assert sink.body == b"".join(body)  # split, never altered
    assert clock() - 1000.0 == pytest.approx((seconds - 30.0) / 4, abs=0.5)
    assert sink.messages[-1]["more_body"] is False
    assert all(m["more_body"] for m in sink.messages[1:-1])


def test_the_buffer_goes_out_at_once() -> None:
    p, clock = pacer()
    sink = Collect()
    # 25 seconds of a 200-second track: inside the 30-second buffer, no wait at all.
    asyncio.run(
        respond(
            paced_send(p, "s:a", sink),
            206,
            [(b"content-range", b"bytes 0-499999/4000000"), (b"x-content-duration", b"200")],
            [b"a" * 500_000],
        )
    )
    assert clock() == 1000.0 and len(sink.body) == 500_000


def test_parallel_range_requests_of_one_session_share_its_budget() -> None:
    p, clock = pacer()
    headers = [(b"content-range", b"bytes 0-1999999/4000000"), (b"x-content-duration", b"200")]
    sinks = [Collect(), Collect()]

    async def both() -> None:
        await asyncio.gather(*(respond(paced_send(p, "s:a", s), 206, headers, [b"z" * 2_000_000]) for s in sinks))

    asyncio.run(both())
    # 200 seconds of audio in all, whichever connection carried it: (200 - 30) / 4.
    assert clock() - 1000.0 == pytest.approx(170 / 4, abs=0.5)
    assert [len(s.body) for s in sinks] == [2_000_000, 2_000_000]


def test_tracks_in_parallel_share_the_session_budget_and_other_sessions_do_not() -> None:
    p, _ = pacer()
    # Two tracks of 100 s each, one session: the second waits for the first's seconds.
    first = p.delay("s:a", 100.0, SETTINGS)
    second = p.delay("s:a", 100.0, SETTINGS)
    other = p.delay("s:b", 100.0, SETTINGS)
    assert first == pytest.approx(70 / 4) and second == pytest.approx(170 / 4) and other == first


def test_a_listener_playing_in_real_time_never_waits_after_the_buffer() -> None:
    p, clock = pacer()
    waits = []
    for _ in range(600):  # ten minutes, one second of audio per second, read as it plays
        waits.append(p.delay("s:a", 1.0, SETTINGS))
        clock.advance(1.0)
    assert max(waits) == 0.0


def test_refusals_and_empty_bodies_are_not_paced() -> None:
    p, clock = pacer()
    sink = Collect()
    asyncio.run(respond(paced_send(p, "s:a", sink), 401, [(b"content-length", b"9000000")], [b"n" * 9_000_000]))
    asyncio.run(respond(paced_send(p, "s:a", sink), 200, [(b"content-length", b"0")], [b""]))
    assert clock() == 1000.0 and p.stats.pieces == 0


def test_the_weight_of_a_second_of_audio() -> None:
    assert bytes_per_second([(b"content-length", b"4000"), (b"x-content-duration", b"2")], SETTINGS) == 2000
    assert (
        bytes_per_second(
            [(b"content-range", b"bytes 0-9/4000"), (b"content-length", b"10"), (b"x-content-duration", b"4")], SETTINGS
        )
        == 1000
    )  # the whole track's size
    assert bytes_per_second([(b"content-length", b"4000")], SETTINGS) == 40_000  # 320 kbps
    assert bytes_per_second([(b"content-length", b"4000"), (b"x-content-duration", b"nan-ish")], SETTINGS) == 40_000
    assert bytes_per_second([(b"content-range", b"bytes */*"), (b"x-content-duration", b"3")], SETTINGS) == 40_000


def test_only_the_paced_groups_are_wrapped() -> None:
    p, _ = pacer()
    guarded = create_app(load_rules(RULES))
    facts = guarded.guard.facts(
        guarded.guard.resolver.resolve({"type": "http", "client": ("192.0.2.1", 1), "headers": []}),
        CHROME,
        "/tracks/5",
    )
    sink = Collect()
    assert p.wrap(sink, SETTINGS, facts) is sink  # a page
    assert p.wrap(sink, None, facts) is sink


def test_the_shipped_rules_pace_audio_and_bad_settings_are_refused(tmp_path: Path) -> None:
    shipped = load_rules(RULES).pacing
    assert shipped is not None and shipped.groups == {"audio"} and shipped.multiple == 4 and shipped.buffer == 30
    assert shipped.bitrate == 320_000
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nextends: default\npacing: {paths: [audio], multiple: 0.5, bitrate: fast}\nrules: []\n")
    with pytest.raises(ConfigError) as error:
        load_rules(bad)
    text = str(error.value)
    assert "rules.yaml:3" in text and "multiple" in text and "'fast' is not a bitrate" in text


FAST = """version: 1
extends: default
sessions: null
pacing: {paths: [audio], multiple: 4, buffer: 1s, bitrate: 1mbps}
rules: []
"""


def test_over_real_http_a_track_comes_paced_whole_and_ranges_intact(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(FAST)
    app = create_app(load_rules(rules))
    app.pacer.sleep = asyncio.sleep  # this test waits in real time (the suite's default does not)
    size = audio_size(5)  # 301,739 bytes: 125,000 at once, the rest at 500,000 a second
    expected = b"".join(audio_bytes(5, 0, size - 1))
    with serving(app) as base:
        started = time.monotonic()
        r = httpx.get(base + "/tracks/5/stream", headers={"user-agent": CHROME}, timeout=10)
        took = time.monotonic() - started
        ranged = httpx.get(
            base + "/tracks/5/stream", headers={"user-agent": CHROME, "range": "bytes=1000-1999"}, timeout=10
        )
    assert r.status_code == 200 and r.content == expected
    assert took >= (size - 125_000) / 500_000 * 0.95  # paced: at least the unbuffered part's time
    assert ranged.status_code == 206 and ranged.content == expected[1000:2000]
    stats = app.pacer.stats
    assert stats.responses == 2 and stats.waits > 0
