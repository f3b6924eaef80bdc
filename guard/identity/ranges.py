"""Checking claims: is a "Googlebot" really from Google's network?

Operators publish the address ranges their crawlers use. ``RangeVerifier`` loads them
from JSON files (the operators' own format: ``{"prefixes": [{"ipv4Prefix": ...}]}``)
named ``rules/ranges/<agent name>.json`` and answers in microseconds from sorted integer
intervals (binary search). An agent with no ranges loaded cannot be verified here.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from guard.identity.address import Client, IPNetwork, parse_ip
from guard.identity.catalogue import Agent


class RangeSet:
    """A set of IPv4 and IPv6 networks with O(log n) membership."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        networks = list(networks)
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for version in (4, 6):
            same_family: list[Any] = [n for n in networks if n.version == version]  # one family: collapsible
            for net in ipaddress.collapse_addresses(same_family):  # sorted, merged
                self._starts[version].append(int(net.network_address))
                self._ends[version].append(int(net.broadcast_address))

    def contains(self, version: int, number: int) -> bool:
        """Whether the address ``number`` of IP ``version`` is in the set."""
        starts = self._starts.get(version)
        if not starts:
            return False
        i = bisect.bisect_right(starts, number) - 1
        return i >= 0 and number <= self._ends[version][i]

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def intervals(self) -> list[tuple[int, int, int]]:
        """``(version, first, last)`` of every merged interval."""
        return [(v, a, b) for v in (4, 6) for a, b in zip(self._starts[v], self._ends[v], strict=True)]


def parse_ranges_json(text: str) -> list[IPNetwork]:
    """Networks from an operator's ranges file (Google/Bing/OpenAI style ``prefixes`` list)."""
    doc = json.loads(text)
    prefixes = doc.get("prefixes", []) if isinstance(doc, dict) else doc
    networks: list[IPNetwork] = []
    for entry in prefixes or ():
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, str) and "/" in value:
                try:
                    networks.append(ipaddress.ip_network(value.strip(), strict=False))
                except ValueError:
                    continue  # one bad line does not spoil the file
    return networks


class RangeVerifier:
    """Published address ranges per agent name."""

    def __init__(self, ranges: dict[str, RangeSet] | None = None) -> None:
        self.ranges = {name.lower(): rs for name, rs in (ranges or {}).items()}

    @classmethod
    def from_directory(cls, directory: str | Path) -> RangeVerifier:
        """Load ``<directory>/<agent name>.json`` files; a missing directory loads nothing."""
        ranges: dict[str, RangeSet] = {}
        folder = Path(directory)
        if folder.is_dir():
            for file in sorted(folder.glob("*.json")):
                ranges[file.stem] = RangeSet(parse_ranges_json(file.read_text(encoding="utf-8")))
        return cls(ranges)

    def verify(self, agent_name: str, client: Client) -> bool | None:
        """Whether the client's address is in the published ranges of ``agent_name``.

        None when no ranges are loaded for that agent (it cannot be checked here).
        """
        ranges = self.ranges.get(agent_name.lower())
        if ranges is None:
            return None
        return ranges.contains(client.version, client.number)


class HostingRanges:
    """Published address ranges of cloud and hosting providers: which provider holds an address.

    Loaded from ``<directory>/<provider>.json`` (``rules/ranges/hosting/``): snapshots of the
    providers' own machine-readable lists, each file naming its ``source`` URL and date.
    All providers' networks are merged into one sorted interval list (a network inside
    another provider's is dropped: the outer one answers), so a lookup is one binary
    search however many providers are loaded.
    """

    def __init__(self, providers: dict[str, Iterable[str]] | None = None) -> None:
        self.providers = sorted(providers or {})
        spans: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for name, prefixes in (providers or {}).items():
            for prefix in prefixes:
                span = _span(prefix)
                if span is not None:
                    spans[span[0]].append((span[1], span[2], name))
        self._starts: dict[int, list[int]] = {}
        self._spans: dict[int, list[tuple[int, int, str]]] = {}
        for version, items in spans.items():
            items.sort()
            kept: list[tuple[int, int, str]] = []
            for item in items:
                last = kept[-1] if kept else None
                if last and (item[0] <= last[1] or (item[0] == last[1] + 1 and item[2] == last[2])):
                    # Overlaps the previous span (whose provider answers), or continues it: merged.
                    if item[1] > last[1]:
                        kept[-1] = (last[0], item[1], last[2])
                    continue
                kept.append(item)
            self._spans[version] = kept
            self._starts[version] = [start for start, _, _ in kept]

    @classmethod
    def from_directory(cls, directory: str | Path) -> HostingRanges:
        """Load every ``*.json`` snapshot in ``directory`` (none when it is missing).

        Loaded once per set of files and modification times: every app and reload in a
        process that names the same snapshots shares them.
        """
        folder = Path(directory)
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        stamp = (str(folder), tuple((f.name, f.stat().st_mtime_ns) for f in files))
        loaded = _hosting_cache.get(stamp)
        if loaded is None:
            loaded = cls({f.stem: json.loads(f.read_text(encoding="utf-8")).get("prefixes", []) for f in files})
            _hosting_cache.clear()  # only the newest set is worth keeping
            _hosting_cache[stamp] = loaded
        return loaded

    def provider(self, version: int, number: int) -> str | None:
        """The provider whose ranges hold the address, or None."""
        starts = self._starts.get(version)
        if not starts:
            return None
        i = bisect.bisect_right(starts, number) - 1
        if i < 0:
            return None
        _, end, name = self._spans[version][i]
        return name if number <= end else None

    def __len__(self) -> int:
        return sum(len(spans) for spans in self._spans.values())


_hosting_cache: dict[tuple, HostingRanges] = {}


def hosting_directory(rules_file: str | Path, ranges: Path) -> Path:
    """Where the hosting snapshots are: ``ranges/hosting`` beside the rules file if there, else under ``ranges``."""
    beside_rules = Path(rules_file).parent / "ranges" / "hosting"
    return beside_rules if beside_rules.is_dir() else ranges / "hosting"


def _span(prefix: object) -> tuple[int, int, int] | None:
    """``(version, first, last)`` address of a CIDR string (None if it is not one)."""
    if not isinstance(prefix, str):
        return None
    address, _, bits = prefix.partition("/")
    parsed = parse_ip(address)
    size = 32 if parsed is not None and parsed[0] == 4 else 128
    if parsed is None or not bits.isdigit() or not 0 <= int(bits) <= size:
        return None
    host = (1 << (size - int(bits))) - 1
    return parsed[0], parsed[1] & ~host, parsed[1] | host


def update_hosting_ranges(
    directory: str | Path, *, timeout: float = 10.0, log: Callable[[str], None] = print
) -> RangesReport:
    """Refresh each hosting snapshot in ``directory`` from the ``source`` URL it names.

    Providers publish JSON (AWS, Google Cloud, Oracle, Vultr) or CSV geofeeds
    (DigitalOcean, Linode): every CIDR in the document is taken, validated and collapsed.
    A download that fails, holds no prefixes or anything broader than /8 or /19 keeps the
    file already there. Returns ``{provider file: outcome}`` (see :class:`RangesReport`).
    """
    import re
    import urllib.request

    cidr = re.compile(r"(?<![\w.:])([0-9a-fA-F:.]+/\d{1,3})(?![\w.:])")
    report = RangesReport()
    for file in sorted(Path(directory).glob("*.json")):
        doc = json.loads(file.read_text(encoding="utf-8"))
        url = doc.get("source")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read(64 * 1024 * 1024).decode("utf-8", "replace")
            networks = []
            for text in cidr.findall(body):
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError:
                    continue
            if not networks:
                raise ValueError("no prefixes in the document")
            broad = [n for n in networks if n.prefixlen < MIN_PREFIX[n.version]]
            if broad:
                raise ValueError(f"implausibly broad prefix {broad[0]}")
        except Exception as exc:  # network, HTTP, parsing, validation: keep the last good file
            report[file.stem] = f"kept: {type(exc).__name__}: {exc}"
            log(f"{file.stem}: {url} failed ({type(exc).__name__}: {exc}); kept the last good {file}")
            continue
        v4 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
        v6 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
        prefixes = [*map(str, v4), *map(str, v6)]
        snapshot = {**doc, "snapshot": time.strftime("%Y-%m-%d", time.gmtime()), "prefixes": prefixes}
        snapshot.pop("compiled_by", None)  # now straight from the source
        temporary = file.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(snapshot, indent=1) + "\n", encoding="utf-8")
        temporary.replace(file)
        report[file.stem] = f"updated: {len(prefixes)} prefixes"
        log(f"{file.stem}: {url}: {report[file.stem]} -> {file}")
    return report


#: A published "crawler range" broader than this is refused as implausible (or hostile).
MIN_PREFIX = {4: 8, 6: 19}


class RangesReport(dict[str, str]):
    """``{agent name: outcome}`` of :func:`update_ranges`, with a one-line summary.

    An outcome reads ``updated: N prefixes``, ``kept: reason`` (the download failed and the
    last good file stays) or ``missing: reason`` (it failed and there is no file at all).
    """

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.items() if not outcome.startswith("updated")]

    def summary(self, directory: str | Path) -> str:
        kept = sum(1 for outcome in self.values() if outcome.startswith("kept"))
        missing = len(self.failed) - kept
        text = f"update-ranges: {len(self) - len(self.failed)} of {len(self)} range files updated in {directory}"
        if self.failed:
            text += f"; {len(self.failed)} failed ({kept} kept their last good file, {missing} have none)"
        return text


def update_ranges(
    agents: Iterable[Agent], directory: str | Path, *, timeout: float = 10.0, log: Callable[[str], None] = print
) -> RangesReport:
    """Fetch each agent's published ranges into ``<directory>/<agent name>.json``.

    A download or file that fails validation keeps the file already there. Each outcome
    is logged with the URL it concerns; see :class:`RangesReport`. Runs outside the request
    path (a command or a cron job), so plain blocking HTTP is fine here.
    """
    import urllib.request

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    report = RangesReport()
    for agent in agents:
        url = agent.verification.ranges_url if agent.verification else None
        if not url:
            continue
        target = folder / f"{agent.name.lower()}.json"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read(8 * 1024 * 1024).decode("utf-8")
            doc = json.loads(body)
            networks = parse_ranges_json(body)
            if not networks:
                raise ValueError("no prefixes in the file")
            broad = [n for n in networks if n.prefixlen < MIN_PREFIX[n.version]]
            if broad:
                raise ValueError(f"implausibly broad prefix {broad[0]}")
        except Exception as exc:  # network, HTTP, JSON, validation: keep the last good file
            if target.exists():
                report[agent.name] = f"kept: {type(exc).__name__}: {exc}"
                log(f"{agent.name}: {url} failed ({type(exc).__name__}: {exc}); kept the last good {target}")
            else:
                report[agent.name] = f"missing: {type(exc).__name__}: {exc}"
                log(f"{agent.name}: {url} failed ({type(exc).__name__}: {exc}); no file written, none existed")
            continue
        snapshot = {
            "source": url,
            "creationTime": doc.get("creationTime") if isinstance(doc, dict) else None,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "prefixes": [{f"ipv{n.version}Prefix": str(n)} for n in networks],
        }
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(snapshot, indent=1) + "\n", encoding="utf-8")
        temporary.replace(target)  # atomic: a reader never sees half a file
        report[agent.name] = f"updated: {len(networks)} prefixes"
        log(f"{agent.name}: {url}: {report[agent.name]} -> {target}")
    return report
