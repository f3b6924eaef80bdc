"""``guard top``: the clients, subnets and agents the guard stops most, live from Redis.

Each app instance counts requests and denials (blocks and throttles) per client, subnet
and agent in memory and, every few seconds, adds its busiest names (``keep`` per kind and
count) to per-minute sorted sets in Redis: one small pipelined call off the request path,
whatever the traffic; keys expire after an hour. The table is therefore the top of the
tops: exact for anyone busy, blind to the long tail. ``guard top`` sums
the last minutes across all instances and draws a table, refreshed until interrupted.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guard.policy.engine import Decision, Facts

log = logging.getLogger("guard")

KINDS = ("client", "subnet", "agent")
BUCKET_TTL = 3600


def bucket_key(namespace: str, kind: str, metric: str, minute: int) -> str:
    # One hash tag for all of them: a cluster keeps them in one slot, so ZUNION works.
    return f"{namespace}:{{top}}:{kind}:{metric}:{minute}"


class TopCounter:
    """Per-instance tallies, flushed to Redis in the background."""

    def __init__(self, client: Any, namespace: str = "guard", interval: float = 5.0, keep: int = 50) -> None:
        self.client = client
        self.namespace = namespace
        self.interval = interval
        self.keep = keep
        self._tally: Counter[tuple[str, str, str]] = Counter()

    def add(self, facts: Facts, decision: Decision) -> None:
        """Tally one checked request (a few dict updates; no I/O)."""
        agent = facts.identity.agent.name if facts.identity.agent else f"({facts.identity.category})"
        names = (facts.client.key, facts.client.subnet, agent)
        metrics = ("requests",) if decision.allowed else ("requests", "denied")
        for kind, name in zip(KINDS, names, strict=True):
            for metric in metrics:
                self._tally[(kind, metric, name)] += 1

    async def flush(self) -> None:
        """Add the tallies to this minute's sorted sets (one round trip)."""
        tally, self._tally = self._tally, Counter()
        if not tally:
            return
        minute = int(time.time() // 60)
        busiest: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for (kind, metric, name), count in tally.items():
            busiest.setdefault((kind, metric), []).append((count, name))
        touched = set()
        async with self.client.pipeline(transaction=False) as pipe:
            for (kind, metric), counts in busiest.items():
                key = bucket_key(self.namespace, kind, metric, minute)
                for count, name in heapq.nlargest(self.keep, counts):
                    pipe.zincrby(key, count, name)
                touched.add(key)
            for key in touched:
                pipe.expire(key, BUCKET_TTL)
            await pipe.execute()

    async def run(self) -> None:
        """Flush every ``interval`` seconds; Redis trouble only costs this interval's tallies."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception as exc:
                log.debug("guard: top tallies not flushed: %s", exc)


async def read_top(client: Any, namespace: str, minutes: int, limit: int) -> dict[str, list[tuple[str, int, int]]]:
    """Per kind, the top ``limit`` names by denials over the last ``minutes``: (name, denied, requests)."""
    now = int(time.time() // 60)
    window = range(now - minutes + 1, now + 1)
    table: dict[str, list[tuple[str, int, int]]] = {}
    for kind in KINDS:
        denied = dict(await client.zunion([bucket_key(namespace, kind, "denied", m) for m in window], withscores=True))
        requests = dict(
            await client.zunion([bucket_key(namespace, kind, "requests", m) for m in window], withscores=True)
        )
        names = sorted(requests, key=lambda n: (denied.get(n, 0), requests[n]), reverse=True)[:limit]
        table[kind] = [(_text(n), int(denied.get(n, 0)), int(requests[n])) for n in names]
    return table


def render(table: dict[str, list[tuple[str, int, int]]], minutes: int) -> str:
    """The table as text, one section per kind."""
    lines = [f"guard top: the last {minutes} min across all instances ({time.strftime('%H:%M:%S')})", ""]
    for kind in KINDS:
        lines.append(f"{'top ' + kind + 's':<44} {'denied':>10} {'requests':>10} {'denied %':>9}")
        for name, denied, requests in table.get(kind, []):
            share = 100.0 * denied / requests if requests else 0.0
            lines.append(f"{name[:44]:<44} {denied:>10} {requests:>10} {share:>8.1f}%")
        if not table.get(kind):
            lines.append("  (nothing yet)")
        lines.append("")
    return "\n".join(lines)


def _text(name: Any) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
