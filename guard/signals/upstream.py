"""The application's own robots.txt, fetched through the application itself.

With ``directives.merge_robots: upstream`` guard serves its generated robots.txt merged
with the one the wrapped application serves. That file is asked for once per policy, as
an in-process ASGI request (no network), and read up to :data:`ROBOTS_LIMIT` bytes.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Scope

from guard.signals.directives import ROBOTS_LIMIT

log = logging.getLogger("guard")


class UpstreamRobots:
    """Asks the wrapped application for ``GET /robots.txt``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def fetch(self) -> str | None:
        """The application's robots.txt, or None when it has none (not 200) or fails."""
        chunks: list[bytes] = []
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and sum(map(len, chunks)) < ROBOTS_LIMIT:
                chunks.append(message.get("body", b""))

        try:
            await self.app(_robots_request(), receive, send)
        except Exception:
            log.exception("guard: the application failed to serve its robots.txt; serving ours alone")
            return None
        return b"".join(chunks).decode("utf-8", "replace") if status == 200 else None


def _robots_request() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/robots.txt",
        "raw_path": b"/robots.txt",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": None,
        "server": None,
    }
