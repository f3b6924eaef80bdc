"""Checking claims: is a "Googlebot" really from Google's network?

Operators publish the address ranges their crawlers use. ``RangeVerifier`` loads them
from JSON files (the operators' own format: ``{"prefixes": [{"ipv4Prefix": ...}]}``)
named in ``rules/ranges/<agent>.json`` and answers in microseconds from sorted integer
intervals. An agent with no ranges loaded cannot be verified, and fails verification.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path

from guard.clientaddr import Client, IPNetwork


class RangeSet:
    """A set of IPv4 and IPv6 networks with O(log n) membership."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        networks = list(networks)
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for version in (4, 6):
            same_family = [n for n in networks if n.version == version]
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
    for entry in prefixes:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, str) and "/" in value:
                networks.append(ipaddress.ip_network(value.strip(), strict=False))
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

    def verify(self, agent_name: str, client: Client) -> bool:
        """Whether the client's address is in the published ranges of ``agent_name``."""
        ranges = self.ranges.get(agent_name.lower())
        return ranges is not None and ranges.contains(client.version, client.number)
