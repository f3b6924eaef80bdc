"""The Prometheus endpoint: ``metrics.path`` of the rules, readable from ``metrics.allow`` only.

Readers are told apart by the socket peer, never a forwarded address: a client cannot
claim to be the monitoring system by writing a header. Others get the application's
answer for that path, as if guard served nothing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import Scope, Send

from guard.identity.address import Networks
from guard.responses import respond

if TYPE_CHECKING:
    from guard.policy.rules import Policy


class MetricsEndpoint:
    """Serves a registry on the policy's metrics path to the policy's readers."""

    def __init__(self, registry: CollectorRegistry, policy: Policy) -> None:
        self.registry = registry
        self.use(policy)

    def use(self, policy: Policy) -> None:
        """Take the path and readers of ``policy`` (start-up and reloads)."""
        self.path = policy.metrics_path
        self.readers = Networks(policy.metrics_allow)

    def serves(self, scope: Scope, path: str) -> bool:
        """Whether this request is a scrape by an allowed reader."""
        if path != self.path:
            return False
        peer = scope.get("client")
        return peer is not None and isinstance(peer[0], str) and self.readers.contains_text(peer[0])

    async def respond(self, send: Send) -> None:
        await respond(send, 200, generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.encode())
