"""A small music platform to put the guard in front of.

Tracks 1..100000 are generated from their id: a title, an artist, and a few hundred
kilobytes of deterministic bytes that stand in for the MP3. No files are needed.
Artists ``a1``..``a500`` each own 200 tracks (artist ``aN`` owns N, N + 500, ...); the
shipped consent file (rules/consent.yaml) opts a few of them in to AI use.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from guard.consent.settings import DEFAULT_LEDGER, ConsentSettings
from guard.middleware import GuardMiddleware
from guard.policy.engine import Clock
from guard.policy.rules import Policy
from guard.stores.base import Store

TRACKS = 100_000
ARTISTS = 500
CHUNK = 64 * 1024
STREAM_URL_LIFE = 6 * 3600.0  # a signed stream URL: a desktop player's evening, paused and resumed
_ADJECTIVES = ("Blue", "Silent", "Electric", "Golden", "Midnight", "Paper", "Velvet", "Broken", "Neon", "Wild")
_NOUNS = ("River", "Echo", "Garden", "Signal", "Harbour", "Comet", "Lantern", "Tide", "Orchard", "Static")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def artist_number(track_id: int) -> int:
    return (track_id - 1) % ARTISTS + 1


def artist_of(track: str) -> str | None:
    """The artist id of a track id (the guard's artist resolver for the demo)."""
    try:
        track_id = int(track)
    except ValueError:
        return None
    return f"a{artist_number(track_id)}" if 1 <= track_id <= TRACKS else None


def artist(number: int) -> dict:
    """An artist: id, name and track ids."""
    seed = hashlib.sha256(f"artist-{number}".encode()).digest()
    return {
        "id": f"a{number}",
        "name": f"The {_ADJECTIVES[seed[0] % 10]} {_NOUNS[seed[1] % 10]}s",
        "tracks": list(range(number, TRACKS + 1, ARTISTS)),
    }


def track(track_id: int) -> dict:
    """Metadata of a track, derived from its id."""
    seed = hashlib.sha256(str(track_id).encode()).digest()
    number = artist_number(track_id)
    return {
        "id": track_id,
        "title": f"{_ADJECTIVES[seed[0] % 10]} {_NOUNS[seed[1] % 10]}",
        "artist": artist(number)["name"],
        "artist_id": f"a{number}",
        "duration_s": 120 + seed[4] % 180,
        "size": audio_size(track_id),
        "stream": f"/tracks/{track_id}/stream",
    }


def audio_size(track_id: int) -> int:
    """Bytes of a track's audio (between 256 and 512 KiB)."""
    return 256 * 1024 + (track_id * 7919) % (256 * 1024)


def audio_bytes(track_id: int, start: int, end: int) -> Iterable[bytes]:
    """Bytes ``start..end`` (inclusive) of a track's audio, in chunks.

    A real, playable MP3: an empty ID3v2 tag, then MPEG-1 Layer III frames (128 kbit/s,
    48 kHz) that decode as silence. The part of each frame a decoder ignores holds bytes
    derived from the track id, so every track's file differs.
    """
    unit = _frames(track_id)
    pos = start
    while pos <= end:
        n = min(CHUNK, end - pos + 1)
        if pos < len(ID3_HEADER):
            head = ID3_HEADER[pos : pos + n]
            chunk = head + unit[: n - len(head)]
        else:
            offset = (pos - len(ID3_HEADER)) % FRAME
            chunk = unit[offset : offset + n]
        yield chunk
        pos += n


class TrackId(Convertor[int]):
    """Only the canonical spelling of a track id (``7``, never ``07``, ``+7`` or ``0_7``)."""

    regex = "[1-9][0-9]{0,8}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("track", TrackId())


ID3_HEADER = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no frames
FRAME = 384  # bytes of one 128 kbit/s, 48 kHz MPEG-1 Layer III frame (1152 samples, 24 ms)
_FRAME_HEADER = b"\xff\xfb\x94\x00"  # sync, MPEG-1, Layer III, no CRC, 128 kbit/s, 48 kHz, stereo
_SIDE_INFO = bytes(32)  # all zero: no main data, silence


def _frames(track_id: int) -> bytes:
    """Whole frames, at least CHUNK + FRAME bytes of them, for slicing chunks out of."""
    filler = (hashlib.sha256(f"track-{track_id}".encode()).digest() * 11)[: FRAME - 36]
    frame = _FRAME_HEADER + _SIDE_INFO + filler
    return frame * (CHUNK // FRAME + 2)


def _track_id(request: Request) -> int | None:
    try:
        value = int(request.path_params["track_id"])  # a permissive platform reads " +0_7" as 7
    except (KeyError, ValueError):
        return None
    return value if 1 <= value <= TRACKS else None


def _artist_number(request: Request) -> int | None:
    value = request.path_params.get("artist_id", "")
    if not value.startswith("a") or not value[1:].isdigit():
        return None
    number = int(value[1:])
    return number if 1 <= number <= ARTISTS and value == f"a{number}" else None


async def artist_page(request: Request) -> Response:
    number = _artist_number(request)
    if number is None:
        return PlainTextResponse("no such artist\n", status_code=404)
    a = artist(number)
    items = "".join(f'<li><a href="/tracks/{t}">{html.escape(track(t)["title"])}</a></li>' for t in a["tracks"][:20])
    return HTMLResponse(
        f"<!doctype html><title>{html.escape(a['name'])}</title><h1>{html.escape(a['name'])}</h1>"
        f"<p>{len(a['tracks'])} tracks</p><ul>{items}</ul>"
    )


async def artist_api(request: Request) -> Response:
    number = _artist_number(request)
    if number is None:
        return JSONResponse({"error": "no such artist"}, status_code=404)
    return JSONResponse(artist(number))


async def home(request: Request) -> Response:
    items = "".join(f'<li><a href="/tracks/{t}">{html.escape(track(t)["title"])}</a></li>' for t in range(1, 21))
    return HTMLResponse(f"<!doctype html><title>Demo music platform</title><h1>New releases</h1><ul>{items}</ul>")


async def track_page(request: Request) -> Response:
    track_id = _track_id(request)
    if track_id is None:
        return PlainTextResponse("no such track\n", status_code=404)
    t = track(track_id)
    near = [i for i in (track_id - 1, track_id + 1) if 1 <= i <= TRACKS]
    links = " ".join(f'<a href="/tracks/{i}">track {i}</a>' for i in near)
    return HTMLResponse(
        f"<!doctype html><title>{html.escape(t['title'])}</title><h1>{html.escape(t['title'])}</h1>"
        f'<p><a href="/artists/{t["artist_id"]}">{html.escape(t["artist"])}</a></p>'
        f'<audio controls src="{t["stream"]}"></audio>'
        f'<p><a href="{playlist_path(track_id)}">Play in a desktop player (.m3u)</a></p><p>{links}</p>'
    )


#: The installed web app's service worker: it keeps /app in its cache and answers later
#: loads of /app from there, so the server never sees them (only the page's own fetches).
SERVICE_WORKER = """
self.addEventListener('install', e => e.waitUntil(caches.open('app').then(c => c.add('/app'))
  .then(() => self.skipWaiting())));
self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', e => {
  if (e.request.mode === 'navigate' && new URL(e.request.url).pathname === '/app') {
    e.respondWith(caches.match('/app').then(r => r || fetch(e.request)));
  }
});
"""


async def web_app(request: Request) -> Response:
    """The platform as an installed web app (PWA): a player page its service worker serves."""
    return HTMLResponse(
        "<!doctype html><title>Demo player</title><h1>Player</h1><audio controls></audio>"
        "<script>navigator.serviceWorker && navigator.serviceWorker.register('/sw.js');"
        "async function play(id) {"
        "  const t = await (await fetch('/api/tracks/' + id)).json();"
        "  const a = document.querySelector('audio'); a.src = t.stream; return a.play(); }"
        "</script>"
    )


async def service_worker(request: Request) -> Response:
    return Response(SERVICE_WORKER, media_type="text/javascript")


async def track_api(request: Request) -> Response:
    """A track's metadata; for a listener with a session, a signed stream URL a desktop player can play."""
    track_id = _track_id(request)
    if track_id is None:
        return JSONResponse({"error": "no such track"}, status_code=404)
    t = track(track_id)
    return JSONResponse({**t, "stream_url": signed_stream(request, t["stream"]), "playlist": playlist_path(track_id)})


def playlist_path(track_id: int) -> str:
    return f"/tracks/{track_id}/playlist.m3u"


async def playlist(request: Request) -> Response:
    """An .m3u of one track whose entry is a signed stream URL: a desktop player (VLC, iTunes,
    foobar2000) shares no browser's cookies, the URL stands in for the listener's session."""
    track_id = _track_id(request)
    if track_id is None:
        return PlainTextResponse("no such track\n", status_code=404)
    t = track(track_id)
    signed = signed_stream(request, t["stream"])
    if signed is None:
        text = f"401 Unauthorized: a playlist needs a session; open /tracks/{track_id} in a browser and use its link.\n"
        return PlainTextResponse(text, status_code=401)
    url = str(request.base_url).rstrip("/") + signed
    body = f"#EXTM3U\n#EXTINF:{t['duration_s']},{t['artist']} - {t['title']}\n{url}\n"
    disposition = f'inline; filename="track-{track_id}.m3u"'
    return Response(body, media_type="audio/x-mpegurl", headers={"content-disposition": disposition})


def signed_stream(request: Request, path: str) -> str | None:
    """``path`` signed for the listener's own session (its budgets apply to the URL), valid for
    :data:`STREAM_URL_LIFE`; None without sessions or without a session that loaded a page."""
    guarded: GuardMiddleware | None = getattr(request.app.state, "guard", None)
    sessions = guarded.sessions if guarded is not None else None
    if guarded is None or sessions is None:
        return None
    guard = guarded.guard
    now = guard.clock()
    client = guard.resolver.resolve(request.scope)
    reading = sessions.read(request.scope, client, request.headers.get("user-agent"), now)
    session = reading.session
    if session is None or reading.signed_url or session.level(now) == "fresh":
        return None  # a signed URL plays as a page's session: a session that loaded none gets none
    # The URL carries the session's proof and no more: a page's session gets a page's URL. It
    # names the network it was made on, where it plays only if sessions stay on theirs (a Cluster).
    network = f"{reading.family}:{reading.tag}"
    return sessions.gate.sign_url(path, session.id, now + STREAM_URL_LIFE, session.proven_until, network)


async def stream(request: Request) -> Response:
    """The audio, honouring a single-range ``Range`` header (206, or 416 when unsatisfiable)."""
    track_id = _track_id(request)
    if track_id is None:
        return PlainTextResponse("no such track\n", status_code=404)
    size = audio_size(track_id)
    headers = {"accept-ranges": "bytes", "content-type": "audio/mpeg"}
    start, end, status = 0, size - 1, 200
    range_header = request.headers.get("range")
    if range_header:
        parsed = _parse_range(range_header, size)
        if parsed is None:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        start, end = parsed
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)

    async def body() -> AsyncIterator[bytes]:
        for chunk in audio_bytes(track_id, start, end):
            yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    m = _RANGE.match(value.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n > 0 else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (start, end) if start <= end and start < size else None


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def platform(permissive: bool = False) -> Starlette:
    """The unguarded demo platform.

    It routes only canonical track ids. ``permissive=True`` builds the platform the guard
    must also hold in front of: any segment that Python's ``int()`` reads as a track
    (``0042``, `` +4_2``, ``٤٢``) serves that track.
    """
    track = "{track_id}" if permissive else "{track_id:track}"
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route("/app", web_app),
            Route("/sw.js", service_worker),
            Route(f"/tracks/{track}", track_page),
            Route(f"/tracks/{track}/stream", stream, methods=["GET", "HEAD"]),
            Route(f"/tracks/{track}/playlist.m3u", playlist),
            Route(f"/api/tracks/{track}", track_api),
            Route("/artists/{artist_id}", artist_page),
            Route("/api/artists/{artist_id}", artist_api),
        ]
    )


def create_app(
    rules: str | Path | Policy | None = None,
    *,
    store: Store | None = None,
    trusted_proxies: Iterable[str] = (),
    clock: Clock | None = None,
    permissive: bool = False,
    **options: Any,
) -> GuardMiddleware:
    """The demo platform behind the guard (``options`` go to :class:`GuardMiddleware`).

    With ``consent=``, the demo's own resolver says whose track a request is about.
    """
    if clock is not None:
        options["clock"] = clock
    if options.get("consent") is not None:
        options.setdefault("artist_resolver", artist_of)
    app = platform(permissive)
    guarded = GuardMiddleware(app, rules, store=store, trusted_proxies=trusted_proxies, **options)
    app.state.guard = guarded  # the demo signs stream URLs with the guard's session keys
    return guarded


def app_from_env() -> GuardMiddleware:
    """The guarded demo configured from the environment (uvicorn factory): GUARD_RULES,
    GUARD_REDIS_URL, GUARD_TRUSTED_PROXIES, GUARD_CONSENT (a consent file, or ``redis``) and
    GUARD_DEMO_DAY_SPEED (the guard's clock runs that many times faster: load tests of the
    hour and day budgets; 96 makes a day pass in 15 minutes)."""
    import logging
    import os

    rules = os.environ.get("GUARD_RULES") or None
    proxies = [p for p in os.environ.get("GUARD_TRUSTED_PROXIES", "").replace(",", " ").split() if p]
    guard_log = logging.getLogger("guard")
    if not guard_log.handlers:  # the demo shows its decisions (JSON lines) and state changes
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        guard_log.addHandler(handler)
        guard_log.setLevel(logging.INFO)
    return create_app(
        rules,
        trusted_proxies=proxies,
        redis_url=os.environ.get("GUARD_REDIS_URL") or None,
        consent=consent_settings(os.environ.get("GUARD_CONSENT") or None),
        clock=compressed_clock(float(os.environ.get("GUARD_DEMO_DAY_SPEED") or 1)),
        tune_gc=True,  # a server of its own: see guard.ops.collector
    )


def compressed_clock(speed: float) -> Clock | None:
    """A clock that runs ``speed`` times faster than real time from now on (None for 1: the real one).

    Every worker started from one ``guard demo`` shares the start: the clock runs from a
    whole hour, so workers started seconds apart agree to within their start-up skew.
    """
    if speed == 1:
        return None
    import time

    origin = time.time() // 3600 * 3600
    return lambda: origin + (time.time() - origin) * speed


def consent_settings(choice: str | None) -> ConsentSettings | None:
    """The demo's consent settings: ``redis``, a consent file, or None (no consent gate)."""
    import os

    if not choice:
        return None
    ledger = os.environ.get("GUARD_CONSENT_LEDGER") or DEFAULT_LEDGER
    if choice == "redis":
        return ConsentSettings(source="redis", ledger=ledger)
    return ConsentSettings(source="file", file=str(Path(choice).resolve()), ledger=ledger)
