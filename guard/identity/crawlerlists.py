"""Named crawlers, previewers and tools from two public crawler lists, kept in step by a sync.

Every entry of crawler-user-agents (monperrus/crawler-user-agents, ``crawler-user-agents.json``)
and of arcjet's well-known-bots (arcjet/well-known-bots, ``well-known-bots.json``) becomes an
agent, with a category from the list's own tags:

=============================================  ==================
crawler-user-agents tag / well-known-bots      category
=============================================  ==================
``social-preview`` / ``preview``               ``social_preview``
``ai-crawler`` / ``ai``                        ``ai_training``
``http-library``, ``browser-automation``,      ``scraping_tool``
``scanner`` / ``tool``, ``programmatic``
``seo`` / ``optimizer``                        ``seo``
``monitoring`` / ``monitor``                   ``monitoring``
``archiver`` / ``archive``                     ``archiver``
anything else (search engines, ads, feeds)     ``crawler``
=============================================  ==================

As with the AI list (:mod:`guard.identity.sync`), the synced snapshot
(``rules/crawler-lists.json``) is written whole by ``guard update-agents`` and never edited;
the curated catalogue names it (``crawler_lists:``), and its own entries win: a listed agent
whose tokens a curated or earlier agent already matches adds nothing, and ``not_synced:``
lists names left out, each with the reason (a token real browsers send, as Facebook's in-app
browser sends ``MetaIAB Facebook``).

Both lists give regular expressions; a pattern that is a plain string (escapes, anchors and
case classes such as ``[pP]`` aside) becomes a User-Agent token, matched whole-word and
lookalike-folded like every token. Patterns that are real expressions are skipped.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.errors import ConfigError
from guard.identity.sync import MIN_KEPT_FRACTION, Fetch, SyncError, fetch_text, write_atomically

#: The lists guard syncs from (both MIT licence): (name, URL).
LIST_SOURCES = (
    (
        "crawler-user-agents",
        "https://raw.githubusercontent.com/monperrus/crawler-user-agents/master/crawler-user-agents.json",
    ),
    ("well-known-bots", "https://raw.githubusercontent.com/arcjet/well-known-bots/main/well-known-bots.json"),
)
PREVIEW = "social_preview"
#: Tags (either list's) to categories, the first that applies winning.
TAG_CATEGORIES = (
    (("social-preview", "preview"), PREVIEW),
    (("ai-crawler", "ai"), "ai_training"),
    (("http-library", "browser-automation", "scanner", "tool", "programmatic"), "scraping_tool"),
    (("seo", "optimizer"), "seo"),
    (("monitoring", "monitor"), "monitoring"),
    (("archiver", "archive"), "archiver"),
)
#: The category of any other listed crawler (search engines, ad and feed fetchers, research).
CRAWLER = "crawler"
#: Every category a listed agent can get: the catalogue must define them all.
CATEGORIES = frozenset({CRAWLER, *(category for _, category in TAG_CATEGORIES)})
_MAX_TOKEN = 100
# Regular-expression syntax left once escaped characters are taken out: no plain string.
_REGEX = re.compile(r"[\[\]{}()|*+?^$]")
_CASE_CLASS = re.compile(r"\[([A-Za-z])([A-Za-z])\]")


def category_of(tags: list[str]) -> str:
    """The category for a listed entry's tags (see the table above)."""
    for names, category in TAG_CATEGORIES:
        if any(tag in names for tag in tags):
            return category
    return CRAWLER


def pattern_token(pattern: str) -> str | None:
    """The plain string a list's pattern matches (``BingPreview\\/`` -> ``BingPreview``), or None."""
    text = pattern.strip().removeprefix("^").removesuffix("$")
    text = _CASE_CLASS.sub(lambda m: m.group(1) if m.group(1).lower() == m.group(2).lower() else m.group(0), text)
    if re.search(r"\\[A-Za-z0-9]", text) or _REGEX.search(re.sub(r"\\.", "", text)):
        return None  # a class (\s, \d), a group, an alternative, a repeat: a real expression
    text = re.sub(r"\\(.)", r"\1", text).strip(" /.()")
    if not text or len(text) > _MAX_TOKEN or not any(c.isalnum() for c in text):
        return None
    return text


@dataclass(frozen=True, slots=True)
class Listed:
    """One listed agent: its category, User-Agent tokens, an example string, and its list."""

    category: str
    ua: tuple[str, ...]
    source: str
    example: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "ua": list(self.ua), "source": self.source, "example": self.example}


@dataclass(frozen=True)
class ListsSnapshot:
    """Listed agents by name, and when each list was fetched from where."""

    sources: dict[str, dict[str, str]]
    agents: dict[str, Listed] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {
            "sources": self.sources,
            "agents": {name: self.agents[name].to_json() for name in sorted(self.agents, key=str.lower)},
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _entries(text: str, what: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SyncError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, list) or not doc or not all(isinstance(e, dict) for e in doc):
        raise SyncError(f"{what} is not a JSON list of crawlers")
    return doc


def _example(values: object) -> str | None:
    if isinstance(values, list):
        return next((v for v in values if isinstance(v, str) and v.strip() and len(v) < 1000), None)
    return None


def _tags(value: object) -> list[str]:
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


def from_crawler_user_agents(text: str, what: str = "crawler-user-agents.json") -> dict[str, Listed]:
    """Every entry of crawler-user-agents whose pattern is a plain string, by that string."""
    out: dict[str, Listed] = {}
    for entry in _entries(text, what):
        if not isinstance(entry.get("pattern"), str):
            raise SyncError(f"{what}: an entry without a pattern")
        token = pattern_token(entry["pattern"])
        if token is not None:
            category = category_of(_tags(entry.get("tags")))
            out.setdefault(token, Listed(category, (token,), "crawler-user-agents", _example(entry.get("instances"))))
    return out


def from_well_known_bots(text: str, what: str = "well-known-bots.json") -> dict[str, Listed]:
    """Every entry of well-known-bots with a plain-string pattern, by its id."""
    out: dict[str, Listed] = {}
    for entry in _entries(text, what):
        if not isinstance(entry.get("id"), str):
            raise SyncError(f"{what}: an entry without an id")
        pattern = entry.get("pattern")
        accepted = pattern.get("accepted") if isinstance(pattern, dict) else None
        tokens = [t for p in accepted or () if isinstance(p, str) and (t := pattern_token(p))]
        instances = entry.get("instances")
        example = _example(instances.get("accepted")) if isinstance(instances, dict) else None
        if tokens and len(entry["id"]) <= _MAX_TOKEN:
            category = category_of(_tags(entry.get("categories")))
            out[entry["id"]] = Listed(category, tuple(dict.fromkeys(tokens)), "well-known-bots", example)
    return out


PARSERS: dict[str, Callable[[str, str], dict[str, Listed]]] = {
    "crawler-user-agents": from_crawler_user_agents,
    "well-known-bots": from_well_known_bots,
}


def read_lists(path: str | Path) -> ListsSnapshot:
    """Load a crawler-lists snapshot; a broken one is a :class:`ConfigError` naming the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        agents = {
            str(name): Listed(str(e["category"]), tuple(str(t) for t in e["ua"]), str(e["source"]), e.get("example"))
            for name, e in doc["agents"].items()
        }
        if any(not a.ua or a.category not in CATEGORIES for a in agents.values()):
            raise ValueError("an agent without tokens, or of an unknown category")
        return ListsSnapshot({str(k): dict(v) for k, v in doc["sources"].items()}, agents)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(str(path), None, f"synced crawler lists: {exc}") from None


def update_lists(
    catalogue_path: str | Path,
    urls: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
    dry_run: bool = False,
    fetch: Fetch = fetch_text,
    clock: Callable[[], float] = time.time,
) -> tuple[list[str], ListsSnapshot]:
    """Sync the crawler-lists snapshot the catalogue at ``catalogue_path`` names from both lists.

    Returns a line per change and a summary, and the new snapshot. Raises
    :class:`SyncError` (nothing written) when a list cannot be fetched, is unusable, looks
    truncated against the last good snapshot, or leaves a catalogue that does not load.
    """
    from guard.identity.catalogue import load_catalogue, parse_catalogue_with_lists

    catalogue = load_catalogue(catalogue_path)
    if catalogue.lists_file is None:
        raise SyncError(f"{catalogue_path} names no crawler lists file (add `crawler_lists: crawler-lists.json`)")
    target = Path(catalogue.lists_file)
    old = read_lists(target) if target.exists() else ListsSnapshot({})
    fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    agents: dict[str, Listed] = {}
    sources: dict[str, dict[str, str]] = {}
    for name, default_url in LIST_SOURCES:
        url = (urls or {}).get(name, default_url)
        found = PARSERS[name](fetch(url, timeout), url)
        before = sum(1 for a in old.agents.values() if a.source == name)
        if before and len(found) < MIN_KEPT_FRACTION * before:
            raise SyncError(f"{url} lists {len(found)} agents against {before} before: refusing a truncated list")
        for key, listed in found.items():
            agents.setdefault(key, listed)
        sources[name] = {"url": url, "fetched": fetched}
    snapshot = ListsSnapshot(sources, agents)
    try:
        parse_catalogue_with_lists(catalogue_path, snapshot)
    except ConfigError as exc:
        raise SyncError(f"the new lists break the catalogue: {exc}") from None
    if not dry_run:
        write_atomically(target, snapshot.to_json())
    added = sorted(set(agents) - set(old.agents), key=str.lower)
    removed = sorted(set(old.agents) - set(agents), key=str.lower)
    changed = sorted((n for n in set(agents) & set(old.agents) if agents[n] != old.agents[n]), key=str.lower)
    lines = [f"added   {n} ({agents[n].category})" for n in added] + [f"removed {n}" for n in removed]
    lines += [f"changed {n}" for n in changed]
    lines.append(f"{len(agents)} listed agents: {len(added)} added, {len(removed)} removed, {len(changed)} changed")
    return lines, snapshot
