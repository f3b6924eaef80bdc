"""Path groups: named sets of URL patterns, and path normalisation.

Patterns use robots.txt syntax (RFC 9309 section 2.2.3): a pattern matches a path that
starts with it, ``*`` matches any run of characters and a trailing ``$`` anchors the end.
``{name}`` matches one path segment and captures it (``/tracks/{track}/stream``).

All groups compile into one regular expression; a path belongs to the first group, in
file order, with a matching pattern, and to the implicit group ``other`` when none does.
Matching uses RE2, which runs in time linear in the path whatever the patterns: a
pattern like ``/a*a*a*a*a*b`` cannot make a long path cost seconds, as backtracking would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

OTHER = "other"
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def pattern_regex(pattern: str, capture_prefix: str = "") -> str:
    """Regex source for one robots-style pattern (anchored at the start by the caller)."""
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(body):
        out.append(_literal(body[pos : m.start()]))
        out.append(f"(?P<{capture_prefix}{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(_literal(body[pos:]))
    return "".join(out) + ("$" if anchored else "")


def _literal(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def robots_pattern(pattern: str) -> str:
    """The pattern as a robots.txt rule value: placeholders become ``*``."""
    return _PLACEHOLDER.sub("*", pattern)


def placeholders(pattern: str) -> list[str]:
    """Names of the ``{name}`` placeholders in ``pattern``."""
    return _PLACEHOLDER.findall(pattern)


@dataclass(frozen=True, slots=True)
class PathMatch:
    """Which group a path belongs to, and the track id it names, if any."""

    group: str
    track: str | None


class PathGroups:
    """Ordered, named groups of patterns compiled into one matcher."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = {name: list(patterns) for name, patterns in groups.items()}
        alternatives: list[str] = []
        self._names: dict[str, str] = {}
        self._track_groups: dict[str, list[str]] = {}
        n = 0
        for name, patterns in self.groups.items():
            for pattern in patterns:
                tag = f"g{n}"
                self._names[tag] = name
                if "track" in placeholders(pattern):
                    self._track_groups[tag] = [f"{tag}_track"]
                alternatives.append(f"(?P<{tag}>{pattern_regex(pattern, tag + '_')})")
                n += 1
        # RE2 has no "(?!)"; a group that can never match: a path never holds a NUL.
        self._regex = re2.compile("(?s)" + ("|".join(alternatives) or "\\x00\\A"))

    def classify(self, path: str) -> PathMatch:
        """The group of an already-normalised path, and its ``{track}`` capture."""
        m = self._regex.match(path)
        if m is None:
            return PathMatch(OTHER, None)
        tag = m.lastgroup or ""
        track_keys = self._track_groups.get(tag)
        return PathMatch(self._names.get(tag, OTHER), m.group(track_keys[0]) if track_keys else None)


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
