"""The AI part of the catalogue, kept in step with the ai.robots.txt community list.

Two files, so that a sync never loses a hand edit:

* the synced snapshot (``rules/ai-robots.json``): the upstream ``robots.json`` entries as
  published (operator, respect, function, frequency, description), with where and when
  they were fetched. ``guard update-agents`` rewrites it whole, and nobody edits it.
* the curated catalogue (``rules/agents.yaml``), which names the snapshot (``synced:``).
  Its entries win: an agent curated there under the same name, or listing the name among
  its robots.txt tokens, keeps its category, tokens, example and verification data.
  Synced names nobody curated become agents of their own, with a category mapped from
  the upstream ``function``.

A sync fetches, validates (a JSON object of named entries, each with the five fields;
not suspiciously smaller than the last good list), checks that the merged catalogue
still loads, and only then replaces the snapshot (write to a temporary file, rename).
Any failure leaves the last good file in place.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from guard.errors import ConfigError

#: The list guard syncs from (ai.robots.txt, MIT licence).
ROBOTS_JSON_URL = "https://raw.githubusercontent.com/ai-robots-txt/ai.robots.txt/main/robots.json"
FIELDS = ("operator", "respect", "function", "frequency", "description")
#: A new list this much smaller than the last good one looks truncated and is refused.
MIN_KEPT_FRACTION = 0.5
_MAX_NAME = 100
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_OPERATOR_END = re.compile(r",| that | who |\. | - ")
_VERSION = re.compile(r"(?:/|\s+)v?\d+(?:\.\d+)*$")


class SyncError(Exception):
    """The upstream list could not be fetched or is not usable; nothing was written."""


@dataclass(frozen=True)
class Snapshot:
    """A synced copy of ``robots.json``: entries by name, and where they came from."""

    source: str
    fetched: str
    agents: dict[str, dict[str, str]]
    note: str = ""

    def to_json(self) -> str:
        doc: dict[str, object] = {"source": self.source, "fetched": self.fetched}
        if self.note:
            doc["note"] = self.note
        doc["agents"] = {name: self.agents[name] for name in sorted(self.agents, key=str.lower)}
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@dataclass
class SyncReport:
    """What a sync changed, by agent name."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # name -> fields that changed
    total: int = 0

    def lines(self, snapshot: Snapshot | None = None) -> list[str]:
        """One line per change, then a summary."""
        out = [f"added   {name} ({category_for(snapshot.agents[name]['function'])})" for name in self.added if snapshot]
        out += [f"removed {name}" for name in self.removed]
        out += [f"changed {name}: {', '.join(fields)}" for name, fields in self.changed.items()]
        out.append(
            f"{self.total} agents: {len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"
        )
        return out


def category_for(function: str) -> str:
    """guard's category for an upstream ``function`` ("AI Search Crawlers" -> ai_search, ...)."""
    text = function.lower()
    if "search" in text:
        return "ai_search"
    if any(word in text for word in ("assistant", "agent", "user-initiated", "user prompts", "user queries")):
        return "ai_assistant"
    if "takes action" in text or "on behalf" in text:
        return "ai_assistant"
    return "ai_training"  # data scrapers, data providers, training, and anything unclear


def operator_name(text: str) -> str:
    """The operator's name: without Markdown links or the prose after it; "unknown" when unclear."""
    plain = _OPERATOR_END.split(_MARKDOWN_LINK.sub(r"\1", text), maxsplit=1)[0].strip()
    return "unknown" if not plain or plain.lower().startswith("unclear") else plain


def ua_token(name: str) -> str:
    """The User-Agent token for a robots.txt name: without a version ("iaskspider/2.0")."""
    return _VERSION.sub("", name).strip() or name


def parse_snapshot(text: str, what: str = "robots.json") -> dict[str, dict[str, str]]:
    """Validate upstream ``robots.json`` text (or a snapshot's ``agents``) into entries."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SyncError(f"{what} is not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("agents"), dict) and "source" in doc:
        doc = doc["agents"]  # a snapshot file
    if not isinstance(doc, dict) or not doc:
        raise SyncError(f"{what} is not a JSON object of named agents")
    agents: dict[str, dict[str, str]] = {}
    for name, entry in doc.items():
        if not name.strip() or len(name) > _MAX_NAME or not name.isprintable():
            raise SyncError(f"{what}: unusable agent name {name[:_MAX_NAME]!r}")
        if not isinstance(entry, dict):
            raise SyncError(f"{what}: entry {name!r} is not an object")
        missing = [f for f in FIELDS if not isinstance(entry.get(f), str)]
        if missing:
            raise SyncError(f"{what}: entry {name!r} lacks {', '.join(missing)}")
        agents[name] = {f: entry[f] for f in FIELDS}
    return agents


def read_snapshot(path: str | Path) -> Snapshot:
    """Load a snapshot file; a broken one is a :class:`ConfigError` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
        agents = parse_snapshot(text, str(path))
        return Snapshot(str(doc.get("source", "")), str(doc.get("fetched", "")), agents, str(doc.get("note", "")))
    except (OSError, ValueError, SyncError, AttributeError) as exc:
        raise ConfigError(str(path), None, f"synced list: {exc}") from None


def diff(old: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]) -> SyncReport:
    """Added, removed and changed entries between two lists."""
    report = SyncReport(total=len(new))
    report.added = sorted((n for n in new if n not in old), key=str.lower)
    report.removed = sorted((n for n in old if n not in new), key=str.lower)
    for name in sorted(set(old) & set(new), key=str.lower):
        fields = [f for f in FIELDS if old[name].get(f) != new[name].get(f)]
        if fields:
            report.changed[name] = fields
    return report


Fetch = Callable[[str, float], str]


def fetch_text(url: str, timeout: float) -> str:
    """GET ``url``; any transport error or non-200 answer is a :class:`SyncError`."""
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise SyncError(f"fetching {url}: {exc.__class__.__name__}: {exc}") from None
    if response.status_code != 200:
        raise SyncError(f"fetching {url}: HTTP {response.status_code}")
    return response.text


def update_agents(
    catalogue_path: str | Path,
    url: str = ROBOTS_JSON_URL,
    *,
    timeout: float = 10.0,
    dry_run: bool = False,
    fetch: Fetch = fetch_text,
    clock: Callable[[], float] = time.time,
) -> tuple[SyncReport, Snapshot]:
    """Sync the snapshot named by the catalogue at ``catalogue_path`` from ``url``.

    Raises :class:`SyncError` (the snapshot untouched) when the list cannot be fetched,
    is not usable, or would leave a catalogue that does not load.
    """
    from guard.identity.catalogue import load_catalogue, parse_catalogue_with

    catalogue = load_catalogue(catalogue_path)
    if catalogue.synced_file is None:
        raise SyncError(f"{catalogue_path} names no synced file (add `synced: ai-robots.json`)")
    target = Path(catalogue.synced_file)
    old = read_snapshot(target).agents if target.exists() else {}
    new = parse_snapshot(fetch(url, timeout), url)
    if old and len(new) < MIN_KEPT_FRACTION * len(old):
        raise SyncError(f"{url} lists {len(new)} agents against {len(old)} before: refusing a truncated list")
    fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    snapshot = Snapshot(url, fetched, new)
    try:
        parse_catalogue_with(catalogue_path, snapshot)  # the merged catalogue must still load
    except ConfigError as exc:
        raise SyncError(f"the new list breaks the catalogue: {exc}") from None
    if not dry_run:
        write_atomically(target, snapshot.to_json())
    return diff(old, new), snapshot


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: readers see the old file or the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
