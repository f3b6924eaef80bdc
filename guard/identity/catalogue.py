"""The crawler catalogue (rules/agents.yaml) and the User-Agent matcher built from it.

Matching works on words: the User-Agent is folded (see :mod:`guard.identity.lookalike`:
lookalike characters, invisible characters, accents, case and digit-for-letter swaps
all fold to one plain Latin spelling) and split into runs of letters and digits, and a
catalogue token, folded the same way, matches when its own words appear consecutively.
That makes matching whole-word ("Spider" never hits "Bytespider", "Code" never hits
"Codec") and indifferent to separators ("ChatGPT-User", "ChatGPT User"). When several
tokens match, the longest wins, so "Sogou web spider" beats "Spider" and
"Apache-HttpClient" beats "Java"; and any named crawler beats a generic HTTP tool, so
LinkedIn's "LinkedInBot/1.0 (...; Apache-HttpClient ...)" is LinkedInBot.

A one-word token split in two ("GPT-Bot", "GPT Bot", "(GPT)(Bot)", "Byte spider") still
matches: two neighbouring words of at least two letters each are tried joined. So does
one spelt letter by letter ("G P T B o t", "G.P.T.Bot"): a run of single characters is
tried joined, alone and with the word after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guard.config import validate
from guard.errors import ConfigError
from guard.identity.catalogue_model import CatalogueFile, catalogue_context
from guard.identity.crawlerlists import CATEGORIES as LISTED_CATEGORIES
from guard.identity.crawlerlists import ListsSnapshot, read_lists
from guard.identity.lookalike import DIGIT_IMAGES, fold, fold_text, maybe_spelt_out, plain_words, unicode_table
from guard.identity.sync import Snapshot, category_for, operator_name, read_snapshot, ua_token
from guard.yamlfile import Located, load_yaml

#: The category of the platform's own apps (the rules' ``apps:``).
APP = "app"
#: Categories of generic tools that many named crawlers are built on.
GENERIC_CATEGORIES = frozenset({"scraping_tool"})


def words(text: str) -> tuple[str, ...]:
    """The words of ``text`` in the matching alphabet (folded, lower-case ASCII)."""
    return tuple(w.decode() for w in fold_text(text).split())


def spelt_out(ua_words: list[bytes]) -> list[bytes]:
    """Runs of one-character words joined, alone and with the next word.

    A run may carry neighbours that are no part of the name ("x G P T B o t 1.0"), so up
    to three one-character words are also tried off either end.
    """
    joined: list[bytes] = []
    run: list[bytes] = []
    for word in [*ua_words, b"  "]:
        if len(word) == 1:
            run.append(word)
            continue
        if len(run) > 1:
            n = len(run)
            for start in range(min(4, n - 1)):
                for end in range(n, max(start + 1, n - 4), -1):
                    joined.append(b"".join(run[start:end]))
            if len(word) > 1 and word != b"  ":
                joined += [b"".join(run[start:]) + word for start in range(min(4, n))]
        run = []
    return joined


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
    synced: bool = False  # from the synced list (ai.robots.txt), not curated by hand
    leading: bool = False  # named only as the User-Agent's first product
    listed: bool = False  # from the synced public crawler lists (crawler-user-agents, well-known-bots)


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
    synced_file: str | None = None  # the synced list it merges (guard update-agents rewrites it)
    lists_file: str | None = None  # the synced crawler lists it merges (guard update-agents rewrites it)
    # key word -> [(token words, key word's offset, specificity, match, number-shaped)], most
    # specific first. A multi-word token is keyed by its rarest-looking word, so that words
    # every browser sends ("windows", "like", "60" folded to "go") seldom lead anywhere.
    _index: dict[bytes, list[tuple[tuple[bytes, ...], int, tuple[int, int, int, int], Match, bool]]] = field(
        default_factory=dict, repr=False
    )

    # first halves (2+ letters) of one-word tokens that a crawler could split in two
    _halves: frozenset[bytes] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        unicode_table()  # built once per process here, at start-up, not by the first odd request
        halves: set[bytes] = set()
        for agent in self.agents:
            named = agent.category not in GENERIC_CATEGORIES
            for token in agent.ua_tokens:
                token_words = tuple(fold_text(token).split())
                # The public crawler lists' names rank below everyone else's.
                tier = 0 if agent.listed else 1
                specificity = (tier, int(named), len(token_words), len(token))
                # Spelt only with letters a digit folds to ("so", "go"): a number could fold to it.
                numberish = all(_numberish(w) for w in token_words)
                offset = _key_word(token_words)
                entry = (token_words, offset, specificity, Match(agent, token), numberish)
                self._index.setdefault(token_words[offset], []).append(entry)
                if len(token_words) > 1:
                    # Written as one word too: "ClaudeWeb", or spelt out "C l a u d e - W e b".
                    joined = b"".join(token_words)
                    self._index.setdefault(joined, []).append(((joined,), 0, specificity, Match(agent, token), False))
                if len(token_words) == 1 and named:  # a generic tool split in two is an unnamed visitor
                    word = token_words[0]
                    # Not halves spelt only with letters a digit folds to: numbers ("15") would hit them.
                    halves.update(h for h in (word[:cut] for cut in range(2, len(word) - 1)) if not _numberish(h))
        self._halves = frozenset(halves)
        for candidates in self._index.values():
            candidates.sort(key=lambda c: c[2], reverse=True)

    def with_apps(self, apps: list[tuple[str, tuple[str, ...]]]) -> Catalogue:
        """This catalogue and the platform's own apps (name, User-Agent tokens): category ``app``."""
        extra = [Agent(name, "this platform", APP, tokens, ()) for name, tokens in apps]
        categories = {**self.categories, APP: "The platform's own apps."}
        return Catalogue(categories, [*self.agents, *extra], self.source, self.synced_file, self.lists_file)

    def by_name(self, name: str) -> Agent | None:
        """The agent called ``name`` (case-insensitive), if any."""
        lowered = name.lower()
        return next((a for a in self.agents if a.name.lower() == lowered), None)

    def match(self, user_agent: str | bytes) -> Match | None:
        """The most specific catalogue entry whose token appears in ``user_agent``.

        Bytes are taken as the raw header value; text is encoded as Latin-1 (as ASGI decodes).
        """
        raw = user_agent if isinstance(user_agent, bytes) else user_agent.encode("latin-1", "replace")
        return self.lookup(raw)[0]

    def lookup(self, raw: bytes) -> tuple[Match | None, list[bytes]]:
        """The best catalogue hit in the raw header value, and its folded words."""
        ua_words = fold(raw).split()
        words_ = ua_words
        if not self._halves.isdisjoint(ua_words):
            # A token split in two: add the joined neighbours as words of their own.
            words_ = ua_words + [a + b for a, b in itertools.pairwise(ua_words) if a in self._halves and len(b) >= 2]
        if maybe_spelt_out(raw):
            words_ = words_ + spelt_out(ua_words)
        index = self._index
        if index.keys().isdisjoint(words_):
            return None, ua_words  # the common case: an ordinary browser
        best: tuple[tuple[int, int, int, int], Match] | None = None
        for i, word in enumerate(words_):
            for token_words, offset, specificity, hit, numberish in index.get(word, ()):
                n = len(token_words)
                start = i - offset
                if (n == 1 or (start >= 0 and tuple(words_[start : start + n]) == token_words)) and not (
                    numberish and _only_numbers(raw, word)
                ):
                    if best is None or specificity > best[0]:
                        best = (specificity, hit)
                    break  # candidates are sorted: the first hit here is this position's best
        return (best[1] if best else None), ua_words


# Words of browser User-Agents, never a good key for a multi-word token.
_COMMON_WORDS = frozenset(
    fold_text(w)
    for w in (
        *("mozilla", "windows", "nt", "win64", "like", "gecko", "khtml", "applewebkit", "chrome", "safari", "mobile"),
        *("linux", "android", "compatible", "version", "macintosh", "intel", "mac", "os", "iphone", "cpu", "build"),
        *("http", "https", "www", "com", "org"),
    )
)


def _key_word(token_words: tuple[bytes, ...]) -> int:
    """The position of the word a token is looked up by: its longest uncommon word."""
    ranked = sorted(range(len(token_words)), key=lambda i: (token_words[i] not in _COMMON_WORDS, len(token_words[i])))
    return ranked[-1]


def _numberish(word: bytes) -> bool:
    return set(word.decode()) <= DIGIT_IMAGES


def _only_numbers(raw: bytes, folded: bytes) -> bool:
    """Whether ``folded`` is in the User-Agent only as a number (``607`` is not "got")."""
    numbers = words_ = False
    for word in plain_words(raw):
        if fold(word) == folded:
            if word.isdigit():
                numbers = True
            else:
                words_ = True
    return numbers and not words_


def load_catalogue(path: str | Path) -> Catalogue:
    """Load and validate a catalogue file (and the synced list it names); errors name file and line."""
    return parse_catalogue(load_yaml(path), Path(path).parent)


def parse_catalogue_with(path: str | Path, snapshot: Snapshot) -> Catalogue:
    """The catalogue at ``path`` merged with ``snapshot`` instead of the synced file it names."""
    return parse_catalogue(load_yaml(path), Path(path).parent, snapshot)


def parse_catalogue_with_lists(path: str | Path, lists: ListsSnapshot) -> Catalogue:
    """The catalogue at ``path`` merged with ``lists`` instead of the crawler-lists file it names."""
    return parse_catalogue(load_yaml(path), Path(path).parent, lists=lists)


def parse_catalogue(
    doc: Located,
    base_dir: Path | None = None,
    snapshot: Snapshot | None = None,
    lists: ListsSnapshot | None = None,
) -> Catalogue:
    """Validate parsed YAML (see :mod:`guard.identity.catalogue_model`) into a :class:`Catalogue`.

    The synced lists the file names (``synced:`` and ``crawler_lists:``, relative to
    ``base_dir``) are merged in, or ``snapshot`` and ``lists`` in their place.
    """
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
            leading=entry.leading,
        )
        for entry in model.agents
    ]
    synced_file = None
    if model.synced is not None:
        synced_file = str((base_dir or Path(doc.file).parent) / model.synced)
        if snapshot is None:
            snapshot = read_snapshot(synced_file)
    if snapshot is not None:
        for agent in synced_agents(agents, snapshot):
            if agent.category not in model.categories:
                raise ConfigError(doc.file, None, f"the synced list needs category {agent.category!r}")
            agents.append(agent)
    lists_file = None
    if model.crawler_lists is not None:
        lists_file = str((base_dir or Path(doc.file).parent) / model.crawler_lists)
        if lists is None:
            lists = read_lists(lists_file)
    if lists is not None:
        missing = sorted(LISTED_CATEGORIES - set(model.categories))
        if missing:
            raise ConfigError(doc.file, None, f"the synced crawler lists need categories {', '.join(missing)}")
        agents += listed_agents(agents, lists, model.not_synced)
    return Catalogue(dict(model.categories), agents, doc.file, synced_file, lists_file)


def listed_agents(agents: list[Agent], lists: ListsSnapshot, left_out: Mapping[str, str]) -> list[Agent]:
    """Agents for the listed crawlers: each with the tokens no agent before it matches.

    An entry every token of which is matched already (by a curated agent, a synced AI agent
    or an earlier entry) adds nothing; names in ``left_out`` are skipped.
    """
    skipped = {name.lower() for name in left_out}
    names = {a.name.lower() for a in agents}
    known = {words(t) for a in agents for t in a.ua_tokens}
    out = []
    for name, listed in lists.agents.items():
        if name.lower() in skipped or name.lower() in names:
            continue
        tokens = tuple(t for t in listed.ua if words(t) and words(t) not in known)
        if not tokens:
            continue
        known.update(words(t) for t in tokens)
        names.add(name.lower())
        operator = f"{listed.source} (synced)"
        out.append(Agent(name, operator, listed.category, tokens, tokens, listed.example, synced=True, listed=True))
    return out


def synced_agents(curated: list[Agent], snapshot: Snapshot) -> list[Agent]:
    """Agents for the synced names that no curated agent claims (by name or robots token).

    Names that differ only in case ("Webzio-Extended", "webzio-extended") make one agent.
    """
    claimed = {a.name.lower() for a in curated} | {t.lower() for a in curated for t in a.robots_tokens}
    groups: dict[str, list[str]] = {}
    for name in snapshot.agents:
        if name.lower() not in claimed:
            groups.setdefault(name.lower(), []).append(name)
    out = []
    for names in groups.values():
        name = names[0]
        entry = snapshot.agents[name]
        token = ua_token(name)
        ua = (token,) if words(token) else ()
        category = category_for(entry["function"])
        out.append(Agent(name, operator_name(entry["operator"]), category, ua, tuple(names), synced=True))
    return out
