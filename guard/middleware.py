"""GuardMiddleware: the pure ASGI middleware in front of the application.

Only HTTP requests are checked; lifespan and websocket scopes pass straight through.
Allowed requests reach the app untouched (their ``receive`` and ``send`` are the
server's own, so streaming and Range responses are not buffered or altered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard.directives import ROBOTS_LIMIT, ai_txt, content_headers, merge_robots, robots_txt, tdmrep_json
from guard.engine import Clock, Decision, Guard
from guard.rdns import ReverseDNSVerifier
from guard.robots import RobotsTxt
from guard.rules import Policy, RedisSettings, load_rules
from guard.signatures import SignatureCheck
from guard.stores.base import Store
from guard.stores.memory import MemoryStore
from guard.verify import RangeVerifier

log = logging.getLogger("guard")

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"


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
        self.policy = policy
        self._ours = robots_txt(policy)
        self._directives: dict[str, tuple[bytes, bytes]] = {}
        self._upstream_pending = policy.merge_robots == "upstream"
        self._upstream_lock = asyncio.Lock()
        theirs = None
        if policy.merge_robots and not self._upstream_pending:
            theirs = Path(policy.merge_robots).read_text(encoding="utf-8", errors="replace")
        self._set_robots(theirs)
        if policy.ai_txt:
            self._directives["/ai.txt"] = (ai_txt(policy).encode(), TEXT)
        if policy.tdmrep:
            self._directives["/.well-known/tdmrep.json"] = (tdmrep_json(policy).encode(), JSON)
        self._signals = content_headers(policy)

    def _set_robots(self, theirs: str | None) -> None:
        """Serve (and enforce) our robots.txt merged with the application's."""
        text = merge_robots(self._ours, theirs)
        if self.policy.robots_txt:
            self._directives["/robots.txt"] = (text.encode(), TEXT)
        self.guard.robots = RobotsTxt.parse(text) if self.policy.enforce_robots else None

    async def _fetch_upstream_robots(self) -> None:
        """Ask the wrapped application for its own /robots.txt, once."""
        async with self._upstream_lock:
            if not self._upstream_pending:
                return
            self._upstream_pending = False
            chunks: list[bytes] = []
            status = [0]

            async def receive() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                elif message["type"] == "http.response.body" and sum(map(len, chunks)) < ROBOTS_LIMIT:
                    chunks.append(message.get("body", b""))

            scope = {
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
            try:
                await self.app(scope, receive, send)
            except Exception:
                log.exception("guard: the application failed to serve its robots.txt; serving ours alone")
                return
            if status[0] == 200:
                self._set_robots(b"".join(chunks).decode("utf-8", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._upstream_pending:
            await self._fetch_upstream_robots()
        directive = self._directives.get(scope.get("path", ""))
        if directive is not None:
            body, content_type = directive
            await _respond(send, 200, body, cache=True, head=scope.get("method") == "HEAD", content_type=content_type)
            return
        guard = self.guard
        try:
            client = guard.resolver.resolve(scope)
            signed = self._signature(scope) if guard.signatures is not None else None
            query = scope.get("query_string", b"").decode("latin-1")
            facts = guard.facts(client, _user_agent(scope), scope.get("path", "/"), signed, query)
            exempt = guard.is_exempt(facts.where.group)
            decision = None if exempt else await guard.decide(facts)
        except Exception:  # the guard must never take the site down
            log.exception("guard: error while checking a request; letting it through")
            decision, exempt = None, True
        if decision is None or decision.allowed:
            if exempt or not self._signals:
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, _with_headers(send, self._signals))
            return
        identity = facts.identity
        log.info(
            "guard %s rule=%s client=%s category=%s agent=%s verified=%s evidence=%s path=%s",
            decision.action,
            decision.rule_id,
            facts.client.ip,
            identity.category,
            identity.agent.name if identity.agent else "-",
            identity.verified,
            identity.evidence or "-",
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


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` headers to the response start; the body passes untouched."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sender


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
    cache: bool = False,
    head: bool = False,
    content_type: bytes = TEXT,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"public, max-age=3600" if cache else b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if head else body})
