"""Decoys: what a canary is answered with, shaped like the application's own answers.

Deterministic from the id (the same canary looks the same on every fetch and every
instance): a page, the API's JSON, or a valid WAV of a few minutes of generated tones,
never an empty body a scraper could tell from a real track.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import math
import struct
from typing import NamedTuple

#: Audio of decoys: 8 kHz, 8-bit mono PCM (64 kbit/s), two and a half to four and a half minutes.
RATE = 8000
SHORTEST, LONGEST = 150, 270
_WORDS = (
    "amber", "harbour", "late", "northern", "glass", "river", "quiet", "orbit", "paper", "summer",
    "velvet", "signal", "hollow", "lantern", "copper", "drift", "meadow", "static", "echo", "winter",
)  # fmt: skip


class Decoy(NamedTuple):
    """A decoy response: status 200 with this body and content type."""

    body: bytes
    content_type: str


def _seed(track: str) -> bytes:
    return hashlib.sha256(b"guard decoy:" + track.encode()).digest()


def title_of(track: str) -> tuple[str, str, int]:
    """A believable title, artist and length in seconds for ``track`` (deterministic)."""
    s = _seed(track)
    title = f"{_WORDS[s[0] % 20].title()} {_WORDS[s[1] % 20].title()}"
    artist = f"The {_WORDS[s[2] % 20].title()} {_WORDS[s[3] % 20].title()}s"
    return title, artist, SHORTEST + int.from_bytes(s[4:6], "big") % (LONGEST - SHORTEST)


def page(track: str, stream_url: str) -> Decoy:
    """The track's page."""
    title, artist, seconds = title_of(track)
    t, a = html.escape(title), html.escape(artist)
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t} - {a}</title></head>'
        f"<body><h1>{t}</h1><p>{a} · {seconds // 60}:{seconds % 60:02d}</p>"
        f'<audio controls preload="none" src="{html.escape(stream_url)}"></audio></body></html>'
    )
    return Decoy(body.encode(), "text/html; charset=utf-8")


def metadata(track: str, stream_url: str) -> Decoy:
    """The API's JSON for the track."""
    title, artist, seconds = title_of(track)
    doc = {"id": int(track) if track.isdigit() else track, "title": title, "artist": artist}
    doc |= {"duration": seconds, "stream": stream_url}
    return Decoy(json.dumps(doc).encode(), "application/json")


def audio(track: str) -> Decoy:
    """A WAV of generated tones, of the length :func:`title_of` gives (cached: a few are fetched)."""
    return Decoy(_wav(track), "audio/wav")


@functools.lru_cache(maxsize=16)
def _wav(track: str) -> bytes:
    s = _seed(track)
    seconds = title_of(track)[2]
    # Two bars of four notes, repeated: one bar computed, the rest copies (a few ms per decoy).
    notes = [110.0 * 2 ** ((s[8 + i] % 24) / 12) for i in range(8)]
    bar = bytearray()
    for freq in notes:
        for n in range(RATE // 4):
            envelope = 1 - n / (RATE // 4)
            bar.append(128 + int(60 * envelope * math.sin(2 * math.pi * freq * n / RATE)))
    data = bytes(bar) * (seconds // 2) + bytes(bar[: (seconds % 2) * RATE])
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE, 1, 8) + b"data" + struct.pack("<I", len(data))
    return header + data


def for_group(group: str, audio_groups: frozenset[str], api_groups: frozenset[str], track: str, stream: str) -> Decoy:
    """The decoy for a canary fetched on a path of ``group``."""
    if group in audio_groups:
        return audio(track)
    if group in api_groups:
        return metadata(track, stream)
    return page(track, stream)
