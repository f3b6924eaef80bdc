"""The crawler catalogue (rules/agents.yaml) and the User-Agent matcher built from it.

Matching works on words: the User-Agent is lower-cased and split into runs of letters
and digits, and a catalogue token matches when its own words appear consecutively.
That makes matching whole-word ("Spider" never hits "Bytespider", "Code" never hits
"Codec") and indifferent to separators ("ChatGPT-User", "ChatGPT User"). When several
tokens match, the longest wins, so "Sogou web spider" beats "Spider" and
"Apache-HttpClient" beats "Java"; and any named crawler beats a generic HTTP tool, so
LinkedIn's "LinkedInBot/1.0 (...; Apache-HttpClient ...)" is LinkedInBot.

A one-word token split in two ("GPT-Bot", "GPT Bot", "(GPT)(Bot)", "Byte spider") still
matches: two neighbouring words of at least two letters each are tried joined.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from guard.config import validate
from guard.identity.catalogue_model import CatalogueFile, catalogue_context
from guard.yamlfile import Located, load_yaml

# Bytes translation table: ASCII letters and digits kept (lower-cased), everything else a space.
_WORD_TABLE = bytes(ord(chr(c).lower()) if chr(c).isascii() and chr(c).isalnum() else 32 for c in range(256))
#: Categories of generic tools that many named crawlers are built on.
GENERIC_CATEGORIES = frozenset({"scraping_tool"})


def words(text: str) -> tuple[str, ...]:
    """The lower-case ASCII alphanumeric words of ``text``."""
    return tuple(w.decode() for w in _split(text.encode("latin-1", "replace")))


def _split(raw: bytes) -> list[bytes]:
    # translate + split runs in C: several times faster than a regex findall.
    return raw.translate(_WORD_TABLE).split()


@dataclass(frozen=True, slots=True)
class Verification:
    """How an operator lets sites check that a request really comes from its crawler."""

    ranges_url: str | None = None
    rdns_suffixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Agent:
    """One known crawler, fetcher or HTTP tool."""

    name: str
    operator: str
    category: str
    ua_tokens: tuple[str, ...]
    robots_tokens: tuple[str, ...]
    example: str | None = None
    verification: Verification | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A catalogue hit: the agent and the token that matched."""

    agent: Agent
    token: str


@dataclass
class Catalogue:
    """All known agents, their categories, and a compiled matcher."""

    categories: dict[str, str]
    agents: list[Agent]
    source: str = ""  # the file it was loaded from
    # first word -> [(token words, specificity, match)], most specific first
    _index: dict[bytes, list[tuple[tuple[bytes, ...], tuple[int, int, int], Match]]] = field(
        default_factory=dict, repr=False
    )

    # first halves (2+ letters) of one-word tokens that a crawler could split in two
    _halves: frozenset[bytes] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        halves: set[bytes] = set()
        for agent in self.agents:
            named = agent.category not in GENERIC_CATEGORIES
            for token in agent.ua_tokens:
                token_words = tuple(_split(token.encode("latin-1", "replace")))
                specificity = (int(named), len(token_words), len(token))
                self._index.setdefault(token_words[0], []).append((token_words, specificity, Match(agent, token)))
                if len(token_words) == 1:
                    word = token_words[0]
                    halves.update(word[:cut] for cut in range(2, len(word) - 1))
        self._halves = frozenset(halves)
        for candidates in self._index.values():
            candidates.sort(key=lambda c: c[1], reverse=True)

    def by_name(self, name: str) -> Agent | None:
        """The agent called ``name`` (case-insensitive), if any."""
        lowered = name.lower()
        return next((a for a in self.agents if a.name.lower() == lowered), None)

    def match(self, user_agent: str | bytes) -> Match | None:
        """The most specific catalogue entry whose token appears in ``user_agent``.

        Bytes are taken as the raw header value; text is encoded as Latin-1 (as ASGI decodes).
        """
        raw = user_agent if isinstance(user_agent, bytes) else user_agent.encode("latin-1", "replace")
        ua_words = _split(raw)
        index = self._index
        if not self._halves.isdisjoint(ua_words):
            # A token split in two: add the joined neighbours as words of their own.
            ua_words += [a + b for a, b in itertools.pairwise(ua_words) if a in self._halves and len(b) >= 2]
        if index.keys().isdisjoint(ua_words):
            return None  # the common case: an ordinary browser
        best: tuple[tuple[int, int, int], Match] | None = None
        for i, word in enumerate(ua_words):
            for token_words, specificity, hit in index.get(word, ()):
                n = len(token_words)
                if n == 1 or tuple(ua_words[i : i + n]) == token_words:
                    if best is None or specificity > best[0]:
                        best = (specificity, hit)
                    break  # candidates are sorted: the first hit here is this position's best
        return best[1] if best else None


def load_catalogue(path: str | Path) -> Catalogue:
    """Load and validate a catalogue file; errors name file and line."""
    doc = load_yaml(path)
    return parse_catalogue(doc)


def parse_catalogue(doc: Located) -> Catalogue:
    """Validate parsed YAML (see :mod:`guard.identity.catalogue_model`) into a :class:`Catalogue`."""
    model = validate(CatalogueFile, doc, catalogue_context(doc.data))
    agents = [
        Agent(
            entry.name,
            entry.operator,
            entry.category,
            tuple(entry.ua if entry.ua is not None else [entry.name]),
            tuple(entry.robots if entry.robots is not None else [entry.name]),
            entry.example,
            Verification(entry.verify.ranges, tuple(s.lower().lstrip(".") for s in entry.verify.rdns))
            if entry.verify
            else None,
        )
        for entry in model.agents
    ]
    return Catalogue(dict(model.categories), agents, doc.file)
