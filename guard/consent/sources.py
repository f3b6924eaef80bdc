"""Where consents live: a YAML file, Redis, or the application, behind one small interface.

:class:`ConsentSource` has three parts, each with a different promise:

* :meth:`~ConsentSource.get` answers the enforcement question (may this AI agent have
  this artist's content?). It is fresh: the file as last (re)loaded, Redis as of this
  request (an opt-out takes effect on the next request), the application's answer
  cached for a few seconds. It fails closed: trouble reads as "no consent".
* :meth:`~ConsentSource.peek` never waits: what is cached, for the per-response signals
  a browser's response carries. A miss starts a background fetch and reads as unknown.
* :meth:`~ConsentSource.listing` is the set of artists known to have opted in (for
  robots.txt and license.xml), refreshed in the background.

Nothing here reads a file or blocks on the request path: the file is read at start and
re-read in a worker thread when it changes; Redis and the application are awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from guard.consent.model import ARTIST_ID, ArtistConsent, ConsentError, parse_artist, parse_registry
from guard.lru import LRU

log = logging.getLogger("guard.consent")

#: What ``peek`` returns when nothing is cached yet (as opposed to a cached "no consent").
UNKNOWN = object()
#: Bound on the artists listed in robots.txt and license.xml.
LISTING_MAX = 10_000

AppLookup = Callable[[str], Awaitable[ArtistConsent | Mapping | list | None]]


class ConsentSource(Protocol):
    """The registry of artists' consents (see the module docstring)."""

    #: Where it reads from, for banners and ``guard explain``.
    name: str

    async def get(self, artist: str) -> ArtistConsent | None: ...

    async def current(self, artist: str) -> ArtistConsent | None:
        """What the enforcement decides on: :meth:`get`, or (Redis) the last record seen,
        which the ledger write then confirms unchanged in the same round trip."""

    def peek(self, artist: str) -> ArtistConsent | object | None: ...

    def listing(self) -> Mapping[str, ArtistConsent]: ...

    async def refresh(self) -> None:
        """Re-read what the background task keeps fresh (file, listing)."""

    async def close(self) -> None: ...


class FileSource:
    """Consents from a YAML file (``artists: {id: [consent, ...]}``), reloaded when it changes.

    A file that does not parse at start raises :class:`ConsentError`; a bad edit later is
    logged and the last good consents stay in force.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file {self.path}"
        self._stamp = self._mtime()
        self._records = load_file(self.path)

    async def get(self, artist: str) -> ArtistConsent | None:
        return self._records.get(artist)

    current = get

    def peek(self, artist: str) -> ArtistConsent | None:
        return self._records.get(artist)

    def listing(self) -> Mapping[str, ArtistConsent]:
        return self._records

    async def refresh(self) -> None:
        """Reload the file if it changed (in a worker thread)."""
        stamp = await asyncio.to_thread(self._mtime)
        if stamp == self._stamp:
            return
        try:
            records = await asyncio.to_thread(load_file, self.path)
        except (OSError, ConsentError, yaml.YAMLError) as exc:
            log.error("guard: consent file %s not reloaded, keeping the last good consents: %s", self.path, exc)
            self._stamp = stamp
            return
        self._records, self._stamp = records, stamp
        log.warning("guard: consent file %s reloaded: %d artists", self.path, len(records))

    async def close(self) -> None:
        return None

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return -1.0


def load_file(path: str | Path) -> dict[str, ArtistConsent]:
    """Read a consent file; errors name the file."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConsentError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version", 1) != 1 or set(doc) - {"version", "artists"}:
        raise ConsentError(f"{path}: a consent file has 'version: 1' and 'artists: {{id: [consents]}}'")
    try:
        return parse_registry(doc.get("artists"))
    except ConsentError as exc:
        raise ConsentError(f"{path}: {exc}") from None


def save_file(path: str | Path, records: Mapping[str, ArtistConsent]) -> None:
    """Write a consent file atomically (a reader never sees half of it)."""
    path = Path(path)
    doc = {"version": 1, "artists": {a: r.to_list() for a, r in sorted(records.items()) if r.consents}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


class RedisSource:
    """Consents in Redis, shared by every instance; each record is one JSON string.

    Keys (one hash tag, so a cluster keeps them on one node): ``<ns>:{consent}:artist:<id>``
    holds the artist's list of consents, ``<ns>:{consent}:artists`` the set of artist ids.
    Decisions use :meth:`current`, the record last seen; the ledger then records a served
    request only if the key still holds it (:meth:`condition`), in the same round trip, so
    a revoke applies to the very next request.
    These are data, not counters: they do not expire (a consent's ``until`` ends it).
    """

    def __init__(self, client: Any, namespace: str = "guard", *, timeout: float = 0.5, cache_size: int = 65536):
        self.client = client
        self.namespace = namespace
        self.timeout = timeout
        self.name = f"redis {namespace}:{{consent}}"
        self._cache: LRU[str, tuple[ArtistConsent | None, str]] = LRU(cache_size)  # (record, raw JSON)
        self._listing: dict[str, ArtistConsent] = {}
        self._pending: set[str] = set()

    def key(self, artist: str) -> str:
        return f"{self.namespace}:{{consent}}:artist:{artist}"

    @property
    def set_key(self) -> str:
        return f"{self.namespace}:{{consent}}:artists"

    async def get(self, artist: str) -> ArtistConsent | None:
        try:
            raw = await asyncio.wait_for(self.client.get(self.key(artist)), self.timeout)
        except Exception as exc:  # Redis down: no consent can be confirmed, so none is assumed
            log.warning("guard: consent lookup for %s failed (%s); treated as not opted in", artist, exc)
            return None
        return self._remember(artist, raw)

    async def current(self, artist: str) -> ArtistConsent | None:
        cached = self._cache.get(artist)
        return cached[0] if cached is not None else await self.get(artist)

    def condition(self, artist: str) -> tuple[str, str]:
        """The key and the raw record :meth:`current` answered from: the ledger records an
        access only if the key still holds exactly that (a revoke in between voids it)."""
        cached = self._cache.get(artist)
        return self.key(artist), cached[1] if cached is not None else ""

    def _remember(self, artist: str, raw: Any) -> ArtistConsent | None:
        record = self._decode(artist, raw)
        text = raw.decode() if isinstance(raw, bytes) else raw or ""
        self._cache.put(artist, (record, text))
        return record

    def peek(self, artist: str) -> ArtistConsent | object | None:
        cached = self._cache.get(artist)
        if cached is not None:
            return cached[0]
        if artist not in self._pending and len(self._pending) < 256:
            self._pending.add(artist)
            task = asyncio.get_running_loop().create_task(self.get(artist))
            task.add_done_callback(lambda _: self._pending.discard(artist))
        return UNKNOWN

    def listing(self) -> Mapping[str, ArtistConsent]:
        return self._listing

    async def refresh(self) -> None:
        """Reload the listing (artist set and records) and the cache of every listed artist."""
        artists = sorted(a.decode() if isinstance(a, bytes) else a for a in await self.client.smembers(self.set_key))
        artists = artists[:LISTING_MAX]
        values = await self.client.mget([self.key(a) for a in artists]) if artists else []
        listing = {}
        for artist, raw in zip(artists, values, strict=True):
            record = self._remember(artist, raw)
            if record is not None:
                listing[artist] = record
        self._listing = listing

    async def put(self, record: ArtistConsent) -> None:
        """Store an artist's record (an empty one deletes it)."""
        async with self.client.pipeline(transaction=True) as pipe:  # one slot: atomic on a cluster too
            if record.consents:
                pipe.set(self.key(record.artist), json.dumps(record.to_list()))
                pipe.sadd(self.set_key, record.artist)
            else:
                pipe.delete(self.key(record.artist))
                pipe.srem(self.set_key, record.artist)
            await pipe.execute()
        self._cache.pop(record.artist)

    async def close(self) -> None:
        return None

    def _decode(self, artist: str, raw: Any) -> ArtistConsent | None:
        if raw is None:
            return None
        try:
            return parse_artist(artist, json.loads(raw))
        except (ValueError, ConsentError) as exc:
            log.error("guard: consent record of %s in Redis is invalid (%s); treated as not opted in", artist, exc)
            return None


class AppSource:
    """Consents from the application: ``async def lookup(artist_id)`` returning the artist's
    consents (an :class:`ArtistConsent`, or the plain list/mapping form) or None.

    Answers are cached for ``ttl`` seconds in a bounded LRU; concurrent requests for one
    artist share one call; a call that raises or takes longer than ``timeout`` reads as
    "no consent" (and is not cached, so the next request asks again).
    """

    def __init__(
        self,
        lookup: AppLookup,
        *,
        ttl: float = 30.0,
        timeout: float = 1.0,
        cache_size: int = 65536,
        listing: Callable[[], Awaitable[list[str]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.name = f"application {getattr(lookup, '__qualname__', 'lookup')}"
        self._cache: LRU[str, tuple[float, ArtistConsent | None]] = LRU(cache_size)
        self._inflight: dict[str, asyncio.Future] = {}
        self._list = listing
        self._listing: dict[str, ArtistConsent] = {}

    async def get(self, artist: str) -> ArtistConsent | None:
        cached = self._cache.get(artist)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        future = self._inflight.get(artist)
        if future is None:
            future = asyncio.get_running_loop().create_task(self._ask(artist))
            self._inflight[artist] = future
            future.add_done_callback(lambda _: self._inflight.pop(artist, None))
        return await asyncio.shield(future)

    async def current(self, artist: str) -> ArtistConsent | None:
        return await self.get(artist)

    def peek(self, artist: str) -> ArtistConsent | object | None:
        cached = self._cache.get(artist)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        if artist not in self._inflight and len(self._inflight) < 256:
            task = asyncio.get_running_loop().create_task(self._ask(artist))
            self._inflight[artist] = task
            task.add_done_callback(lambda _: self._inflight.pop(artist, None))
        return UNKNOWN if cached is None else cached[1]  # stale while it is asked again

    def listing(self) -> Mapping[str, ArtistConsent]:
        return self._listing

    def forget(self, artist: str) -> None:
        """Drop the cached answer for ``artist`` (call it when an artist changes their mind)."""
        self._cache.pop(artist)

    async def refresh(self) -> None:
        if self._list is None:
            return
        listing = {}
        for artist in (await self._list())[:LISTING_MAX]:
            record = await self.get(artist)
            if record is not None:
                listing[artist] = record
        self._listing = listing

    async def close(self) -> None:
        for future in list(self._inflight.values()):
            future.cancel()

    async def _ask(self, artist: str) -> ArtistConsent | None:
        try:
            answer = await asyncio.wait_for(_awaited(self.lookup(artist)), self.timeout)
            record = answer if isinstance(answer, ArtistConsent) or answer is None else parse_artist(artist, answer)
        except Exception as exc:  # the application's trouble is no consent, never a crash
            log.warning("guard: the application's consent lookup for %s failed (%s)", artist, exc)
            return None
        self._cache.put(artist, (self.clock() + self.ttl, record))
        return record


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def valid_artist(artist: str | None) -> bool:
    """Whether ``artist`` is a well-formed artist id (anything else is never looked up)."""
    return artist is not None and ARTIST_ID.match(artist) is not None
