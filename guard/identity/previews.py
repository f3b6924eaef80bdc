"""The link previewers of the catalogue, kept in step with two public crawler lists.

Every entry that crawler-user-agents tags ``social-preview`` (monperrus/crawler-user-agents,
``crawler-user-agents.json``) and every entry of arcjet's well-known-bots in category
``preview`` (arcjet/well-known-bots, ``well-known-bots.json``) becomes an agent of category
``social_preview``: pages and their images, never audio or the API. As with the AI list
(:mod:`guard.identity.sync`), the synced snapshot (``rules/previews.json``) is written whole
by ``guard update-agents`` and never edited; the curated catalogue names it (``previews:``),
and its own entries win: a synced previewer whose tokens a curated agent already matches
adds nothing, and ``not_previews:`` lists names left out, each with the reason (a token
that real browsers send, as Facebook's in-app browser sends ``MetaIAB Facebook``).

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

#: The lists guard syncs previewers from (both MIT licence): (name, URL).
PREVIEW_SOURCES = (
    (
        "crawler-user-agents",
        "https://raw.githubusercontent.com/monperrus/crawler-user-agents/master/crawler-user-agents.json",
    ),
    ("well-known-bots", "https://raw.githubusercontent.com/arcjet/well-known-bots/main/well-known-bots.json"),
)
CATEGORY = "social_preview"
_MAX_TOKEN = 100
# Regular-expression syntax left after unescaping: such a pattern is no plain string.
_REGEX = re.compile(r"[\[\]{}()|*+?^$]")
_CASE_CLASS = re.compile(r"\[([A-Za-z])([A-Za-z])\]")


def pattern_token(pattern: str) -> str | None:
    """The plain string a list's pattern matches (``BingPreview\\/`` -> ``BingPreview``), or None."""
    text = pattern.strip().removeprefix("^").removesuffix("$")
    text = _CASE_CLASS.sub(lambda m: m.group(1) if m.group(1).lower() == m.group(2).lower() else m.group(0), text)
    if re.search(r"\\[A-Za-z0-9]", text) or _REGEX.search(re.sub(r"\\.", "", text)):
        return None  # a class (\s, \d), a group, an alternative, a repeat: a real expression
    text = re.sub(r"\\(.)", r"\1", text)
    text = text.strip(" /.()")
    if not text or len(text) > _MAX_TOKEN or not any(c.isalnum() for c in text):
        return None
    return text


@dataclass(frozen=True, slots=True)
class Previewer:
    """One synced previewer: its User-Agent tokens, an example string, and the list it came from."""

    ua: tuple[str, ...]
    source: str
    example: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ua": list(self.ua), "source": self.source, "example": self.example}


@dataclass(frozen=True)
class PreviewSnapshot:
    """Synced previewers by name, and when each list was fetched from where."""

    sources: dict[str, dict[str, str]]
    agents: dict[str, Previewer] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {
            "sources": self.sources,
            "agents": {name: self.agents[name].to_json() for name in sorted(self.agents, key=str.lower)},
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SyncError(f"{what} is not JSON: {exc}") from None


def _example(values: object) -> str | None:
    if isinstance(values, list):
        return next((v for v in values if isinstance(v, str) and v.strip() and len(v) < 1000), None)
    return None


def from_crawler_user_agents(text: str, what: str = "crawler-user-agents.json") -> dict[str, Previewer]:
    """The entries of crawler-user-agents tagged ``social-preview``, by their pattern's token."""
    doc = _load_json(text, what)
    if not isinstance(doc, list) or not doc:
        raise SyncError(f"{what} is not a JSON list of crawlers")
    out: dict[str, Previewer] = {}
    for entry in doc:
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str):
            raise SyncError(f"{what}: an entry without a pattern")
        tags = entry.get("tags")
        if not isinstance(tags, list) or "social-preview" not in tags:
            continue
        token = pattern_token(entry["pattern"])
        if token is not None:
            out.setdefault(token, Previewer((token,), "crawler-user-agents", _example(entry.get("instances"))))
    return out


def from_well_known_bots(text: str, what: str = "well-known-bots.json") -> dict[str, Previewer]:
    """The entries of well-known-bots in category ``preview``, by their id."""
    doc = _load_json(text, what)
    if not isinstance(doc, list) or not doc:
        raise SyncError(f"{what} is not a JSON list of bots")
    out: dict[str, Previewer] = {}
    for entry in doc:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise SyncError(f"{what}: an entry without an id")
        categories = entry.get("categories")
        if not isinstance(categories, list) or "preview" not in categories:
            continue
        pattern = entry.get("pattern")
        accepted = pattern.get("accepted") if isinstance(pattern, dict) else None
        tokens = [t for p in accepted or () if isinstance(p, str) and (t := pattern_token(p))]
        instances = entry.get("instances")
        example = _example(instances.get("accepted")) if isinstance(instances, dict) else None
        if tokens and len(entry["id"]) <= _MAX_TOKEN:
            out[entry["id"]] = Previewer(tuple(dict.fromkeys(tokens)), "well-known-bots", example)
    return out


PARSERS: dict[str, Callable[[str, str], dict[str, Previewer]]] = {
    "crawler-user-agents": from_crawler_user_agents,
    "well-known-bots": from_well_known_bots,
}


def read_previews(path: str | Path) -> PreviewSnapshot:
    """Load a previews snapshot; a broken one is a :class:`ConfigError` naming the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        agents = {
            str(name): Previewer(tuple(str(t) for t in e["ua"]), str(e["source"]), e.get("example"))
            for name, e in doc["agents"].items()
        }
        if any(not p.ua for p in agents.values()):
            raise ValueError("an agent without tokens")
        return PreviewSnapshot({str(k): dict(v) for k, v in doc["sources"].items()}, agents)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(str(path), None, f"synced previews: {exc}") from None


def update_previews(
    catalogue_path: str | Path,
    urls: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
    dry_run: bool = False,
    fetch: Fetch = fetch_text,
    clock: Callable[[], float] = time.time,
) -> tuple[list[str], PreviewSnapshot]:
    """Sync the previews snapshot the catalogue at ``catalogue_path`` names from both lists.

    Returns a line per change and a summary, and the new snapshot. Raises
    :class:`SyncError` (nothing written) when a list cannot be fetched, is unusable, looks
    truncated against the last good snapshot, or leaves a catalogue that does not load.
    """
    from guard.identity.catalogue import load_catalogue, parse_catalogue_with_previews

    catalogue = load_catalogue(catalogue_path)
    if catalogue.previews_file is None:
        raise SyncError(f"{catalogue_path} names no previews file (add `previews: previews.json`)")
    target = Path(catalogue.previews_file)
    old = read_previews(target) if target.exists() else PreviewSnapshot({})
    fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    agents: dict[str, Previewer] = {}
    sources: dict[str, dict[str, str]] = {}
    for name, default_url in PREVIEW_SOURCES:
        url = (urls or {}).get(name, default_url)
        found = PARSERS[name](fetch(url, timeout), url)
        before = sum(1 for p in old.agents.values() if p.source == name)
        if before and len(found) < MIN_KEPT_FRACTION * before:
            raise SyncError(f"{url} lists {len(found)} previewers against {before} before: refusing a truncated list")
        for key, previewer in found.items():
            agents.setdefault(key, previewer)
        sources[name] = {"url": url, "fetched": fetched}
    snapshot = PreviewSnapshot(sources, agents)
    try:
        parse_catalogue_with_previews(catalogue_path, snapshot)
    except ConfigError as exc:
        raise SyncError(f"the new previews break the catalogue: {exc}") from None
    if not dry_run:
        write_atomically(target, snapshot.to_json())
    added = sorted(set(agents) - set(old.agents), key=str.lower)
    removed = sorted(set(old.agents) - set(agents), key=str.lower)
    changed = sorted((n for n in set(agents) & set(old.agents) if agents[n] != old.agents[n]), key=str.lower)
    lines = [f"added   {n} (previewer)" for n in added] + [f"removed {n}" for n in removed]
    lines += [f"changed {n}" for n in changed]
    lines.append(f"{len(agents)} previewers: {len(added)} added, {len(removed)} removed, {len(changed)} changed")
    return lines, snapshot
