"""Which artist a request is about: a path parameter, or the application's track resolver.

Paths such as ``/artists/{artist}`` name the artist themselves. Track paths name a track
(the rules' ``{track}``); the application says whose it is through a resolver (async, or
a plain function that answers at once from memory: it is called on the event loop),
whose answers are cached in a bounded LRU: a track's artist does not change often. A
resolver that raises or is slow reads as "unknown artist" (the rules then decide alone).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable

from guard.consent.settings import DEFAULT_ARTIST_PATHS
from guard.consent.sources import UNKNOWN, valid_artist
from guard.lru import LRU
from guard.policy.paths import TrackPattern

log = logging.getLogger("guard.consent")

TrackResolver = Callable[[str], Awaitable[str | None] | str | None]


class ArtistMapper:
    """Maps a request (its normalised path and track) to an artist id."""

    def __init__(
        self,
        patterns: Iterable[str] = DEFAULT_ARTIST_PATHS,
        resolver: TrackResolver | None = None,
        *,
        cache_size: int = 100_000,
        timeout: float = 1.0,
    ) -> None:
        self.patterns = tuple(patterns)
        # A pattern's {artist} is one path segment, exactly like the rules' {track}.
        self._matchers = [TrackPattern(p.replace("{artist}", "{track}")) for p in self.patterns]
        self.resolver = resolver
        self.timeout = timeout
        self._cache: LRU[str, tuple[str | None]] = LRU(cache_size)
        self._pending: set[str] = set()

    def from_path(self, path: str) -> str | None:
        """The artist a path names itself (``/artists/a7/...``), if any."""
        for matcher in self._matchers:
            matched, artist = matcher.match(path)
            if matched and valid_artist(artist):
                return artist
        return None

    async def resolve(self, path: str, track: str | None) -> str | None:
        """The request's artist, asking the resolver on a cache miss."""
        artist = self.from_path(path)
        if artist is not None or track is None or self.resolver is None:
            return artist
        cached = self._cache.get(track)
        if cached is not None:
            return cached[0]
        return await self._ask(track)

    def peek(self, path: str, track: str | None) -> str | object | None:
        """Like :meth:`resolve` but never waits: a miss starts a background lookup (UNKNOWN)."""
        artist = self.from_path(path)
        if artist is not None or track is None or self.resolver is None:
            return artist
        cached = self._cache.get(track)
        if cached is not None:
            return cached[0]
        if not inspect.iscoroutinefunction(self.resolver):  # a plain function answers at once
            answer = self.resolver(track)
            artist = answer if isinstance(answer, str) and valid_artist(answer) else None
            self._cache.put(track, (artist,))
            return artist
        if track not in self._pending and len(self._pending) < 256:
            self._pending.add(track)
            task = asyncio.get_running_loop().create_task(self._ask(track))
            task.add_done_callback(lambda _: self._pending.discard(track))
        return UNKNOWN

    async def _ask(self, track: str) -> str | None:
        assert self.resolver is not None
        try:
            answer = self.resolver(track)
            if inspect.isawaitable(answer):
                answer = await asyncio.wait_for(answer, self.timeout)
        except Exception as exc:
            log.warning("guard: the application's artist resolver failed for track %r (%s)", track[:64], exc)
            return None
        artist = answer if isinstance(answer, str) and valid_artist(answer) else None
        self._cache.put(track, (artist,))
        return artist
