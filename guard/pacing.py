"""Audio at playback pace: a session obtains audio no faster than a multiple of real time.

The response body is paced, never refused: after an initial buffer (``buffer`` seconds of
audio, sent at once so that playback starts without waiting), each further piece of the
body waits until the session has earned it at ``multiple`` seconds of audio per second.
A player, which needs one second of audio per second, never notices; a fresh identity per
track pays the track's length (less the buffer) divided by ``multiple`` in connection time.

What a second of audio weighs comes from the response itself: the track's total size
(Content-Length of a 200, or the total of a 206's Content-Range) divided by its duration
(the ``duration_header`` the application sets, in seconds), else the rules' ``bitrate``.

The budget is a GCRA (a leaky bucket kept as one "theoretical arrival time") per session,
shared by all of the session's tracks and connections: parallel Range requests for one
track, and parallel tracks, draw on the same seconds. Each piece reserves its time before
it waits, so concurrent connections queue behind each other instead of each seeing a full
bucket. State is per process (an :class:`~guard.lru.LRU` of floats): see docs/sessions.md.

Pure ASGI: :meth:`Pacer.wrap` returns a ``send`` that splits large body messages into
pieces (never altering a byte) and awaits the injected ``sleep`` between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Message, Send

from guard.lru import LRU

if TYPE_CHECKING:
    from guard.policy.engine import Facts
    from guard.policy.model import Pacing

#: How long a piece of the body may be, in seconds of paced sending: small enough that the
#: bytes flow steadily, large enough that a fast path stays a few sleeps per second.
PIECE_SECONDS = 0.25
MIN_PIECE = 4096
Sleep = Callable[[float], Awaitable[None]]
#: The wait of a pacer given no ``sleep`` (read at each wait, so a test suite can replace it).
default_sleep: Sleep = asyncio.sleep


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """The rules' ``pacing:`` section, compiled."""

    groups: frozenset[str]  # path groups whose responses are paced (audio)
    multiple: float = 4.0  # seconds of audio per second of wall time, after the buffer
    buffer: float = 30.0  # seconds of audio a session may take at once
    bitrate: float = 320_000.0  # bits per second, when the response names no duration
    duration_header: bytes = b"x-content-duration"
    max_sessions: int = 100_000  # sessions whose budgets are kept (least recently used forgotten)


@dataclass(slots=True)
class PacingStats:
    """What the pacer did, for tests, benchmarks and logs."""

    responses: int = 0
    pieces: int = 0
    waits: int = 0
    sent: int = 0  # body bytes passed on
    waited: float = 0.0  # seconds of sleep asked for


def compile_pacing(spec: Pacing) -> PacingSettings:
    """The request path's settings from the rules' validated ``pacing:`` section."""
    groups = [spec.paths] if isinstance(spec.paths, str) else spec.paths
    return PacingSettings(
        frozenset(groups),
        spec.multiple,
        spec.buffer,
        spec.bitrate,
        spec.duration_header.lower().encode("latin-1"),
        spec.max_sessions,
    )


def bytes_per_second(headers: list[tuple[bytes, bytes]] | tuple, settings: PacingSettings) -> float:
    """What one second of this response's audio weighs: size / duration, else the bitrate."""
    size = duration = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-range":  # bytes a-b/total
            total = value.rpartition(b"/")[2]
            size = float(total) if total.isdigit() else size
        elif lower == b"content-length" and size is None:
            size = float(value) if value.isdigit() else None
        elif lower == settings.duration_header:
            try:
                duration = float(value)
            except ValueError:
                duration = None
    if size and duration and duration > 0:
        return size / duration
    return settings.bitrate / 8


class Pacer:
    """Per-session budgets of audio seconds, and the ``send`` wrapper that spends them.

    :param clock: monotonic seconds (injectable: tests move it by hand).
    :param sleep: awaited between pieces (injectable: tests advance their clock instead);
        None: :data:`default_sleep`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Sleep | None = None) -> None:
        self.clock = clock
        self.sleep = sleep
        self.stats = PacingStats()
        self._tat: LRU[str, float] = LRU(100_000)  # session -> when its budget is next full

    def reserve(self, key: str, seconds_of_audio: float, settings: PacingSettings) -> tuple[float, float]:
        """Reserve ``seconds_of_audio`` for ``key``: when (on this pacer's clock) its first and its
        last byte may go; in between, the bytes are due in proportion."""
        now = self.clock()
        if self._tat.size != settings.max_sessions:
            self._tat.size = settings.max_sessions
        start = max(self._tat.peek(key) or now, now)
        end = start + seconds_of_audio / settings.multiple
        self._tat.put(key, end)
        tolerance = settings.buffer / settings.multiple
        return start - tolerance, end - tolerance

    def delay(self, key: str, seconds_of_audio: float, settings: PacingSettings) -> float:
        """Reserve ``seconds_of_audio`` for ``key``; how long to wait before its last byte goes."""
        return max(0.0, self.reserve(key, seconds_of_audio, settings)[1] - self.clock())

    def wrap(self, send: Send, settings: PacingSettings | None, facts: Facts | None) -> Send:
        """``send`` paced for the request's session (else its client) when its path group is
        paced; else ``send`` itself."""
        if settings is None or facts is None or facts.where.group not in settings.groups:
            return send
        key = "s:" + facts.session.id if facts.session is not None else "c:" + (facts.client.key or facts.client.ip)
        return _PacedSend(self, send, settings, key)


class _PacedSend:
    """One response's ``send``: passes the start through, paces the body of a 200 or 206."""

    __slots__ = ("key", "pacer", "piece", "rate", "send", "settings")

    def __init__(self, pacer: Pacer, send: Send, settings: PacingSettings, key: str) -> None:
        self.pacer, self.send, self.settings, self.key = pacer, send, settings, key
        self.rate = 0.0  # bytes of audio per second; 0: this response is not paced
        self.piece = MIN_PIECE

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if message.get("status") in (200, 206):
                self.rate = bytes_per_second(message.get("headers", ()), self.settings)
                self.piece = max(MIN_PIECE, int(self.rate * self.settings.multiple * PIECE_SECONDS))
                self.pacer.stats.responses += 1
            await self.send(message)
            return
        body = message.get("body", b"") if kind == "http.response.body" else b""
        if not self.rate or not body:
            await self.send(message)
            return
        more = message.get("more_body", False)
        pacer, size = self.pacer, len(body)
        first, last = pacer.reserve(self.key, size / self.rate, self.settings)
        if last <= pacer.clock():  # within the budget (a listener's case): as it is, in one piece
            pacer.stats.pieces += 1
            await self.send(message)
            pacer.stats.sent += size
            return
        view, piece = memoryview(body), self.piece
        for start in range(0, size, piece):
            end = min(start + piece, size)
            wait = first + (last - first) * end / size - pacer.clock()  # this piece's last byte is due
            pacer.stats.pieces += 1
            if wait > 0:
                pacer.stats.waits += 1
                pacer.stats.waited += wait
                await (pacer.sleep or default_sleep)(wait)
            chunk = bytes(view[start:end])
            await self.send({"type": "http.response.body", "body": chunk, "more_body": more or end < size})
            pacer.stats.sent += len(chunk)
