"""Path groups: named sets of URL patterns, and path normalisation.

Patterns use robots.txt syntax (RFC 9309 section 2.2.3): a pattern matches a path that
starts with it, ``*`` matches any run of characters and a trailing ``$`` anchors the end.
``{track}`` matches one path segment and captures it (``/tracks/{track}/stream``); a type
after a colon says how its spellings are canonicalised before counting (``{track:int}``,
the default; ``{track:str}``; or a name the application registered, see guard.policy.tracks).

A path belongs to the first group, in file order, with a matching pattern, and to the
implicit group ``other`` when none does.

No regular expressions: a pattern is split at its wildcards and matched with
``startswith``/``find``, leftmost first, which decides a ``*`` pattern exactly and in
time linear in the path whatever the pattern; ``/a*a*a*a*a*b`` cannot make a long path
cost seconds, as a backtracking regex would. A pattern uses ``*`` or ``{track}``, not both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from guard.lru import SizedLRU
from guard.policy.tracks import canonicaliser, track_types

OTHER = "other"
# {name} or {name:type}; for validation messages and robots.txt
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)(?::([a-z_][a-z0-9_]*))?\}")


class Glob:
    """A robots.txt-style pattern: a prefix, ``*`` for any characters, a final ``$``."""

    __slots__ = ("anchored", "parts")

    def __init__(self, pattern: str) -> None:
        self.anchored = pattern.endswith("$")
        self.parts = (pattern[:-1] if self.anchored else pattern).split("*")

    def match(self, text: str) -> bool:
        """Whether ``text`` matches (from its start). Linear: one scan per part."""
        parts = self.parts
        first = parts[0]
        if not text.startswith(first):
            return False
        if len(parts) == 1:
            return not self.anchored or len(text) == len(first)
        pos = len(first)
        for part in parts[1:-1]:
            found = text.find(part, pos)
            if found < 0:
                return False
            pos = found + len(part)
        last = parts[-1]
        if self.anchored:  # the last part must end the text, after everything matched so far
            return len(text) - len(last) >= pos and text.endswith(last)
        return not last or text.find(last, pos) >= 0


class TrackPattern:
    """A pattern with ``{track}`` placeholders: literal runs and single path segments.

    The captured segment is handed back canonicalised by the placeholder's type.
    """

    __slots__ = ("anchored", "canonical", "match", "pieces")

    def __init__(self, pattern: str) -> None:
        self.anchored = pattern.endswith("$")
        body = pattern[:-1] if self.anchored else pattern
        kinds = [kind or "int" for _, kind in _PLACEHOLDER.findall(body)]
        self.canonical: Callable[[str], str] = canonicaliser(kinds[-1] if kinds else "int")
        self.pieces = _PLACEHOLDER.split(body)[::3]  # literal, segment, literal, segment, ..., literal
        #: Whether ``text`` matches, and the (last) segment that stood for ``{track}`` (raw).
        self.match: Callable[[str], tuple[bool, str | None]] = (
            self._match_one if len(self.pieces) == 2 else self._match_any
        )

    def _match_one(self, text: str) -> tuple[bool, str | None]:
        """:meth:`_match_any` for the usual pattern, one ``{track}`` between two literals."""
        head, tail = self.pieces
        if not text.startswith(head):
            return False, None
        pos = len(head)
        end = text.find("/", pos)
        if end < 0:
            end = len(text)
        if end == pos or not text.startswith(tail, end):
            return False, None  # a segment is never empty
        if self.anchored and end + len(tail) != len(text):
            return False, None
        return True, text[pos:end]

    def _match_any(self, text: str) -> tuple[bool, str | None]:
        """Whether ``text`` matches, and the (last) segment that stood for ``{track}`` (raw)."""
        pos, track = 0, None
        pieces = self.pieces
        for n, literal in enumerate(pieces):
            if not text.startswith(literal, pos):
                return False, None
            pos += len(literal)
            if n < len(pieces) - 1:
                end = text.find("/", pos)
                end = len(text) if end < 0 else end
                if end == pos:
                    return False, None  # a segment is never empty
                track, pos = text[pos:end], end
        return (not self.anchored or pos == len(text)), track


def robots_pattern(pattern: str) -> str:
    """The pattern as a robots.txt rule value: placeholders become ``*``."""
    return _PLACEHOLDER.sub("*", pattern)


def placeholders(pattern: str) -> list[str]:
    """Names of the ``{name}`` / ``{name:type}`` placeholders in ``pattern``."""
    return [name for name, _ in _PLACEHOLDER.findall(pattern)]


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid path pattern, or None (shared by the rules loaders)."""
    if not pattern.startswith("/"):
        return f"path pattern {pattern!r} must start with '/'"
    if "$" in pattern[:-1]:
        return f"path pattern {pattern!r}: '$' may only end a pattern"
    found = _PLACEHOLDER.findall(pattern)
    if any(name != "track" for name, _ in found) or pattern.count("{") != len(found):
        return f"path pattern {pattern!r}: the only placeholder is {{track}} (or {{track:TYPE}})"
    unknown = [kind for _, kind in found if kind and kind not in track_types()]
    if unknown:
        known = ", ".join(track_types())
        return (
            f"path pattern {pattern!r}: unknown track type {unknown[0]!r} (known: {known}; an application "
            "adds its own with guard.register_track_type)"
        )
    if found and "*" in pattern:
        return f"path pattern {pattern!r}: use '*' or '{{track}}', not both"
    return None


class PathMatch(NamedTuple):
    """Which group a path belongs to, and the track id it names, if any.

    ``track`` is the canonical id that distinct-track limits count; ``raw`` the path
    segment it was read from.
    """

    group: str
    track: str | None
    raw: str | None = None


Matcher = tuple[str, "Glob | TrackPattern"]


class PathGroups:
    """Ordered, named groups of patterns.

    A pattern whose literal head names a whole first segment (``/tracks/{track}``,
    ``/api/``) can only match paths in that segment, so the patterns are indexed by it:
    a path is tried against its segment's patterns and those with a shorter head
    (``/``, ``/robots.txt``), still in file order, instead of against every pattern.
    """

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = {name: list(patterns) for name, patterns in groups.items()}
        self._matchers: list[Matcher] = [
            (name, TrackPattern(p) if _PLACEHOLDER.search(p) else Glob(p))
            for name, patterns in self.groups.items()
            for p in patterns
        ]
        self._by_segment, self._unsegmented = _segment_index(self._matchers)
        # Paths up to 512 characters (below), at most 8 MiB of them with their entries.
        self._classified: SizedLRU[str, tuple[str, str | None, str | None]] = SizedLRU(65536, 8 << 20, overhead=250)

    def classify(self, path: str) -> PathMatch:
        """The group of an already-normalised path, and its ``{track}`` capture (cached per path)."""
        found = self._classified.peek(path)
        if found is None:
            match = self._classify(path)
            if len(path) <= 512:
                # kept as a plain tuple of text, which the garbage collector stops watching
                self._classified.put(path, (match.group, match.track, match.raw))
            return match
        return PathMatch(*found)

    def _classify(self, path: str) -> PathMatch:
        end = path.find("/", 1)
        segment = path[1:end] if end > 0 else path[1:]
        candidates = self._by_segment.get(segment, self._unsegmented)
        for name, matcher in candidates:
            if isinstance(matcher, Glob):
                if matcher.match(path):
                    return PathMatch(name, None)
            else:
                matched, raw = matcher.match(path)
                if matched:
                    return PathMatch(name, matcher.canonical(raw) if raw is not None else None, raw)
        return PathMatch(OTHER, None)


def _head(matcher: Glob | TrackPattern) -> str:
    """The literal text every path the matcher matches starts with."""
    return matcher.parts[0] if isinstance(matcher, Glob) else matcher.pieces[0]


def _segment_index(matchers: list[Matcher]) -> tuple[dict[str, tuple[Matcher, ...]], tuple[Matcher, ...]]:
    """Per first path segment, the matchers that may match a path in it (in order); and those
    for any other segment.

    A head ``/seg/...`` (a slash after the first segment) only matches paths whose first
    segment is ``seg``. A shorter head (``/``, ``/robots.txt``, ``/tra*``) may match a path
    whose first segment starts with it, and is kept for every segment it could start.
    """
    segments = {_head(m)[1:].split("/", 1)[0] for _, m in matchers if "/" in _head(m)[1:]}

    def fits(matcher: Glob | TrackPattern, segment: str | None) -> bool:
        rest = _head(matcher)[1:]
        if "/" in rest:
            return segment is not None and rest.split("/", 1)[0] == segment
        return segment is None or segment.startswith(rest)

    by_segment = {s: tuple(m for m in matchers if fits(m[1], s)) for s in segments}
    return by_segment, tuple(m for m in matchers if fits(m[1], None))


def normalise_path(path: str) -> str:
    """The path the application will route: duplicate slashes folded, dot segments resolved.

    The ASGI server already percent-decoded ``path``. Never raises.
    """
    if "//" not in path and "/." not in path:
        return path or "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing
