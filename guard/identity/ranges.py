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

from guard.identity.address import Client, IPNetwork
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
