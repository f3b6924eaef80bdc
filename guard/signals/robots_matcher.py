"""robots.txt as crawlers read it (RFC 9309), so guard can hold them to it.

Parsing: ``user-agent`` lines open a group (consecutive ones share it), ``allow`` and
``disallow`` lines add rules to it, groups naming the same product token are combined
(section 2.2.1), everything else (sitemap, crawl-delay, content-usage) is not a rule.

Matching (section 2.2.2): the longest matching pattern wins and ``allow`` wins a tie;
``*`` matches any characters and a final ``$`` anchors the end; ``/robots.txt`` is
always allowed. Paths and patterns are compared after the same percent-encoding
normalisation: escapes of characters that need none are decoded, everything that
needs one is encoded with upper-case hex, ``/`` and ``%`` escapes are kept as they are
(as Protego, Scrapy's parser, does). Product tokens compare case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from guard.policy.paths import Glob

_HEX = re.compile(r"%([0-9A-Fa-f]{2})")
_KEPT = {"2F", "25"}  # escapes of "/" and "%" keep their meaning and are never decoded
_SAFE = "/%="


def normalise(text: str, *, pattern: bool = False) -> str:
    """``text`` with percent-encoding normalised (a pattern also keeps ``*`` and a final ``$``)."""
    anchor = ""
    if pattern and text.endswith("$"):
        text, anchor = text[:-1], "$"
    kept = _KEPT | {"2A"} if pattern else _KEPT
    raw = bytearray()
    pos = 0
    for m in _HEX.finditer(text):
        raw += text[pos : m.start()].encode("utf-8")
        code = m.group(1).upper()
        raw += ("%" + code).encode() if code in kept else bytes.fromhex(code)
        pos = m.end()
    raw += text[pos:].encode("utf-8")
    decoded = raw.decode("utf-8", "replace")
    return quote(decoded, safe=_SAFE + ("*" if pattern else "")) + anchor


@dataclass(frozen=True, slots=True)
class RobotsRule:
    """One allow/disallow line, normalised and compiled."""

    allow: bool
    pattern: str
    line: str
    _glob: Glob = field(repr=False, compare=False)

    @classmethod
    def make(cls, allow: bool, value: str) -> RobotsRule | None:
        pattern = normalise(value.strip(), pattern=True)
        if not pattern or pattern == "$":
            return None  # an empty rule allows everything (and so changes nothing)
        # Linear-time matching: a hostile pattern in an application's robots.txt costs nothing.
        line = f"{'Allow' if allow else 'Disallow'}: {value.strip()}"
        return cls(allow, pattern, line, Glob(pattern))

    @property
    def length(self) -> int:
        return len(self.pattern)

    def matches(self, path: str) -> bool:
        return self._glob.match(path)


@dataclass
class RobotsTxt:
    """Parsed robots.txt: rules per lower-case product token (``*`` for everyone else)."""

    groups: dict[str, list[RobotsRule]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> RobotsTxt:
        robots = cls()
        agents: list[str] = []
        in_rules = False
        for raw_line in text.splitlines():
            line = raw_line.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            value = value.strip()
            if key == "user-agent":
                if in_rules:  # a user-agent line after rules opens a new group
                    agents, in_rules = [], False
                token = value.lower()
                agents.append(token)
                robots.groups.setdefault(token, [])
            elif key in ("allow", "disallow"):
                in_rules = True
                rule = RobotsRule.make(key == "allow", value)
                if rule is not None:
                    for token in agents:
                        robots.groups[token].append(rule)
        for rules in robots.groups.values():
            rules.sort(key=lambda r: (r.length, r.allow), reverse=True)
        return robots

    def rules_for(self, tokens: Iterable[str]) -> list[RobotsRule] | None:
        """The combined rules of the groups naming any of ``tokens``, else the ``*`` group."""
        found: list[RobotsRule] = []
        named = False
        for token in tokens:
            rules = self.groups.get(token.lower())
            if rules is not None:
                named = True
                found += rules
        if not named:
            return self.groups.get("*")
        found.sort(key=lambda r: (r.length, r.allow), reverse=True)
        return found

    def check(self, tokens: Iterable[str], path: str) -> tuple[bool, RobotsRule | None]:
        """Whether a crawler with these product tokens may fetch ``path`` (with its query), and the deciding rule."""
        rules = self.rules_for(tokens)
        if not rules:
            return True, None
        target = normalise(path)
        if target == "/robots.txt":
            return True, None
        for rule in rules:  # longest first, allow before disallow on a tie
            if rule.matches(target):
                return rule.allow, rule
        return True, None
