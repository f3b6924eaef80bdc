"""Canonical track ids: every spelling an application accepts for one track counts once.

The ``{track}`` of a path pattern is counted by a distinct-track limit. Counting the raw
path segment would let a scraper and a listener disagree with the application about
which track a URL names: ``int()`` accepts ``007``, `` 7``, ``+7``, ``0_7`` and
Arabic-Indic digits, so one track has endless spellings (a listener replaying it under
several would use up its budget) and a long padded spelling could be cut into a bucket shared with others
(a scraper's every track counted as one). So a placeholder is typed, and its value is
canonicalised before it is counted:

* every type first percent-decodes what the server left encoded, applies Unicode NFKC
  and strips surrounding whitespace (:func:`canonical_text`);
* ``{track:int}`` (and a bare ``{track}``) then maps everything a permissive integer
  parser accepts (leading zeros, ``+``, ``_`` between digits, any Unicode decimal digits)
  to the one decimal number; text that is no integer is counted as itself;
* ``{track:str}`` stops there (ids where ``007`` and ``7`` are different tracks);
* ``{track:<name>}`` calls a normaliser the application registered with
  :func:`register_track_type` (``None`` or an error: the canonical text is counted).

An id longer than :data:`MAX_TRACK_ID` or with unprintable characters is never cut
short: it is counted by a hash of its full canonical value (``#`` and 32 hex digits), so
two different ids never share a bucket and the stores get a bounded one-line value.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import unquote

#: A canonical id longer than this is counted by its hash.
MAX_TRACK_ID = 64
TrackType = Callable[[str], str | None]

_PLAIN = re.compile(r"[1-9][0-9]{0,17}")  # the common case, already canonical for int


def plain(raw: str) -> bool:
    """Whether ``raw`` is the common case, already canonical for int: what ``_PLAIN`` matches
    whole (1 to 18 ASCII digits, no leading zero), told by string methods (cheaper than a regex)."""
    return len(raw) <= 18 and raw.isascii() and raw.isdigit() and raw[0] != "0"


def canonical_text(raw: str) -> str:
    """``raw`` percent-decoded (as often as it stays encoded, at most three times), NFKC, stripped."""
    text = raw
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return unicodedata.normalize("NFKC", text).strip()


def integer_text(text: str) -> str | None:
    """The decimal number a permissive ``int()`` reads in ``text`` (already stripped), or None.

    Accepts what Python's ``int()`` does: a sign, Unicode decimal digits, single ``_``
    between digits. Never converts to a number (a thousand-digit id costs linear time).
    """
    sign = ""
    if text[:1] in ("+", "-"):
        sign, text = text[0], text[1:]
    if not text or text[0] == "_" or text[-1] == "_" or "__" in text:
        return None
    digits = []
    for char in text:
        if char == "_":
            continue
        value = unicodedata.decimal(char, None)
        if value is None:
            return None
        digits.append(str(value))
    number = "".join(digits).lstrip("0") or "0"
    return "-" + number if sign == "-" and number != "0" else number


def track_int(raw: str) -> str:
    """``{track:int}``: the number the application reads, or the canonical text if none."""
    if plain(raw):
        return raw
    text = canonical_text(raw)
    return (integer_text(text) if text else None) or text


def track_str(raw: str) -> str:
    """``{track:str}``: the canonical text."""
    return canonical_text(raw)


_TYPES: dict[str, TrackType] = {"int": track_int, "str": track_str}
BUILTIN_TYPES = ("int", "str")


def register_track_type(name: str, normaliser: TrackType) -> None:
    """Let rules use ``{track:<name>}``: ``normaliser`` gets the canonical text of the
    path segment and returns the track's id (None: count the canonical text).

    Register before the rules are loaded (or pass ``track_types=`` to the middleware).
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name in BUILTIN_TYPES:
        raise ValueError(f"track type name {name!r}: lower-case letters, digits and _, not int or str")
    _TYPES[name] = normaliser


def track_types() -> list[str]:
    """Names a ``{track:<type>}`` placeholder may use."""
    return sorted(_TYPES)


def canonicaliser(type_name: str) -> Callable[[str], str]:
    """The function that turns a raw segment into the counted id for ``{track:<type_name>}``."""
    if type_name == "int":
        return _bounded_int
    normaliser = _TYPES[type_name]

    def canonical(raw: str) -> str:
        text = canonical_text(raw)
        try:
            value = normaliser(text) if normaliser is not track_str else text
        except Exception:  # an application's normaliser must not break the request path
            value = None
        return bounded(value if isinstance(value, str) and value else text)

    return canonical


def _bounded_int(raw: str) -> str:
    return raw if plain(raw) else bounded(track_int(raw))


def bounded(track: str) -> str:
    """``track`` itself if short, printable and not empty, else ``#`` and a hash of all of it."""
    if track and len(track) <= MAX_TRACK_ID and track.isprintable() and "|" not in track:
        return track
    digest = hashlib.blake2b(track.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return "#" + digest
