"""What the current policy publishes: the directive files, the response signals, robots.txt.

Built once per policy (at start-up and on each reload), never per request. The
robots.txt guard serves is also the one it enforces on identified crawlers
(``directives.enforce_robots``), so publishing it sets :attr:`Guard.robots`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from guard.responses import JSON, TEXT
from guard.signals.directives import ai_txt, content_headers, merge_robots, robots_txt, tdmrep_json
from guard.signals.robots_matcher import RobotsTxt
from guard.signals.upstream import UpstreamRobots

if TYPE_CHECKING:
    from guard.policy.engine import Guard
    from guard.policy.rules import Policy


@dataclass
class Published:
    """One policy's publications: files by path (body, content type) and response headers."""

    directives: dict[str, tuple[bytes, bytes]]
    signals: list[tuple[bytes, bytes]]
    ours: str  # our robots.txt before any merge
    upstream_pending: bool  # the application's robots.txt is still to be merged in


class Publisher:
    """Keeps :attr:`current` in step with the guard's policy; merges the app's robots.txt once."""

    def __init__(self, guard: Guard, upstream: UpstreamRobots, lock: asyncio.Lock) -> None:
        self.guard = guard
        self.upstream = upstream
        self._lock = lock  # shared with reloads: one change of what is published at a time
        self.current = self.publish(guard.policy)

    def publish(self, policy: Policy) -> Published:
        """Build ``policy``'s publications and make them current (raises if a merged file cannot be read)."""
        directives: dict[str, tuple[bytes, bytes]] = {}
        if policy.ai_txt:
            directives["/ai.txt"] = (ai_txt(policy).encode(), TEXT)
        if policy.tdmrep:
            directives["/.well-known/tdmrep.json"] = (tdmrep_json(policy).encode(), JSON)
        published = Published(
            directives, content_headers(policy), robots_txt(policy), policy.merge_robots == "upstream"
        )
        theirs = None
        if policy.merge_robots and not published.upstream_pending:
            theirs = Path(policy.merge_robots).read_text(encoding="utf-8", errors="replace")
        self._set_robots(published, policy, theirs)
        self.current = published
        return published

    async def ready(self) -> Published:
        """The current publications, once the application's robots.txt is merged (if asked for)."""
        published = self.current
        if published.upstream_pending:
            async with self._lock:
                published = self.current
                if published.upstream_pending:
                    published.upstream_pending = False
                    theirs = await self.upstream.fetch()
                    if theirs is not None:
                        self._set_robots(published, self.guard.policy, theirs)
            published = self.current
        return published

    def _set_robots(self, published: Published, policy: Policy, theirs: str | None) -> None:
        """Serve (and enforce) our robots.txt merged with the application's."""
        text = merge_robots(published.ours, theirs)
        if policy.robots_txt:
            published.directives["/robots.txt"] = (text.encode(), TEXT)
        self.guard.robots = RobotsTxt.parse(text) if policy.enforce_robots else None
