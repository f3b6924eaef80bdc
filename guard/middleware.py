"""GuardMiddleware: the pure ASGI middleware in front of the application.

Only HTTP requests are checked; lifespan and websocket scopes pass straight through.
Allowed requests reach the app untouched (their ``receive`` and ``send`` are the
server's own, so streaming and Range responses are not buffered or altered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from guard.directives import ai_txt, robots_txt
from guard.engine import Clock, Decision, Guard
from guard.rdns import ReverseDNSVerifier
from guard.rules import Policy, RedisSettings, load_rules
from guard.signatures import SignatureCheck
from guard.stores.base import Store
from guard.stores.memory import MemoryStore
from guard.verify import RangeVerifier

log = logging.getLogger("guard")

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"


def default_rules_path() -> Path:
    """The shipped rules file (rules/default.yaml in a checkout, packaged as guard/shipped in a wheel)."""
    if DEFAULT_RULES.exists():
        return DEFAULT_RULES
    from importlib.resources import files

    return Path(str(files("guard.shipped").joinpath("default.yaml")))


class GuardMiddleware:
    """Blocks AI-training crawlers and bulk scrapers; serves robots.txt and ai.txt.

    ``app.add_middleware(GuardMiddleware, rules="rules/default.yaml")`` in Starlette or
    FastAPI, or ``GuardMiddleware(app, ...)`` around any ASGI app.

    :param rules: rules file path, or an already loaded :class:`Policy`. Defaults to the
        shipped rules. A bad file raises :class:`guard.errors.ConfigError` here, at start-up.
    :param store: counter store. Default: Redis when ``redis_url`` (or the rules file's
        ``redis.url``) is set, else the embedded memory store.
    :param redis_url: ``redis://host:port/db`` or ``redis+cluster://host:port``.
    :param trusted_proxies: CIDRs of proxies whose X-Forwarded-For is believed.
    :param clock: seconds since the epoch; injectable for tests.
    :param ranges_dir: directory of published crawler IP ranges (defaults to the
        ``ranges`` folder beside the rules file).
    :param reverse_dns: the forward-confirmed reverse DNS checker (default: the system
        resolver, in worker threads; off when the rules say ``reverse_dns.enabled: false``).

    Redis key prefix, call timeout and fail mode come from the rules file's ``redis:`` section.
    """

    def __init__(
        self,
        app: ASGIApp,
        rules: str | Path | Policy | None = None,
        *,
        store: Store | None = None,
        trusted_proxies: Iterable[str] = (),
        clock: Clock = time.time,
        ranges_dir: str | Path | None = None,
        redis_url: str | None = None,
        reverse_dns: ReverseDNSVerifier | None = None,
    ) -> None:
        self.app = app
        policy = rules if isinstance(rules, Policy) else load_rules(rules or default_rules_path())
        settings = policy.redis or RedisSettings()
        redis_url = redis_url or settings.url
        if store is None and redis_url:
            from guard.stores.redis import RedisStore

            fallback = MemoryStore(policy.memory_max_entries)
            store = RedisStore.from_url(redis_url, timeout=settings.timeout, fail=settings.fail, fallback=fallback)
        if ranges_dir is None:
            ranges_dir = Path(policy.source).parent / "ranges"
        verifier = RangeVerifier.from_directory(ranges_dir)
        self.guard = Guard(
            policy,
            store,
            clock=clock,
            trusted_proxies=trusted_proxies,
            verifier=verifier,
            namespace=settings.namespace,
            rdns=reverse_dns,
        )
        self._directives: dict[str, bytes] = {}
        if policy.robots_txt:
            self._directives["/robots.txt"] = robots_txt(policy).encode()
        if policy.ai_txt:
            self._directives["/ai.txt"] = ai_txt(policy).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = self._directives.get(scope.get("path", ""))
        if body is not None:
            await _respond(send, 200, body, cache=True, head=scope.get("method") == "HEAD")
            return
        guard = self.guard
        try:
            client = guard.resolver.resolve(scope)
            signed = self._signature(scope) if guard.signatures is not None else None
            facts = guard.facts(client, _user_agent(scope), scope.get("path", "/"), signed)
            decision = None if guard.is_exempt(facts.where.group) else await guard.decide(facts)
        except Exception:  # the guard must never take the site down
            log.exception("guard: error while checking a request; letting it through")
            decision = None
        if decision is None or decision.allowed:
            await self.app(scope, receive, send)
            return
        log.info(
            "guard %s rule=%s client=%s category=%s agent=%s path=%s",
            decision.action,
            decision.rule_id,
            facts.client.ip,
            facts.identity.category,
            facts.identity.agent.name if facts.identity.agent else "-",
            facts.path,
        )
        await _deny(send, decision, head=scope.get("method") == "HEAD")

    def _signature(self, scope: Scope) -> SignatureCheck | None:
        """The request's Web Bot Auth check, or None when it carries no signature."""
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        if "signature-input" not in headers:
            return None
        raw_path = scope.get("raw_path") or scope.get("path", "/").encode()
        assert self.guard.signatures is not None
        return self.guard.signatures.verify(
            headers,
            method=scope.get("method", "GET"),
            authority=(headers.get("host") or [""])[0],
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            now=self.guard.clock(),
        )


def _user_agent(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"user-agent":
            return value.decode("latin-1")
    return None


async def _deny(send: Send, decision: Decision, head: bool) -> None:
    if decision.action == "throttle":
        text = f"429 Too Many Requests: guard rule '{decision.rule_id}': {decision.reason}.\n"
        extra = [(b"retry-after", (decision.retry_after_header or "1").encode())]
        await _respond(send, 429, text.encode(), extra=extra, head=head)
    else:
        text = f"403 Forbidden: guard rule '{decision.rule_id}': {decision.reason}. See /robots.txt.\n"
        extra = [(b"retry-after", decision.retry_after_header.encode())] if decision.retry_after_header else []
        await _respond(send, 403, text.encode(), extra=extra, head=head)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
    cache: bool = False,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"public, max-age=3600" if cache else b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if head else body})
