"""GuardMiddleware: the pure ASGI middleware in front of the application.

Only HTTP requests are checked; lifespan and websocket scopes pass straight through.
Allowed requests reach the app untouched (their ``receive`` and ``send`` are the
server's own, so streaming and Range responses are not buffered or altered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard.consent.gate import ConsentGate, build_gate
from guard.consent.settings import ConsentSettings
from guard.errors import ConfigError
from guard.identity.address import Networks
from guard.identity.ranges import HostingRanges, RangeVerifier
from guard.identity.rdns import ReverseDNSVerifier
from guard.identity.signatures import SignatureCheck
from guard.ops.observe import Observer
from guard.ops.top import TopCounter
from guard.policy.engine import Clock, Decision, Guard
from guard.policy.rules import Policy, RedisSettings, load_rules
from guard.policy.tracks import TrackType, register_track_type
from guard.sessions.service import Reply, Sessions, load_keys
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import SessionKeys
from guard.signals.directives import ROBOTS_LIMIT, ai_txt, content_headers, merge_robots, robots_txt, tdmrep_json
from guard.signals.robots_matcher import RobotsTxt
from guard.startup import inside_a_running_server, refuse, warn_if_counters_split
from guard.stores.base import Store
from guard.stores.memory import MemoryStore

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


@dataclass
class Published:
    """What one policy publishes: the directive files, response signals, robots.txt, metrics."""

    directives: dict[str, tuple[bytes, bytes]]
    signals: list[tuple[bytes, bytes]]
    ours: str
    upstream_pending: bool
    metrics_readers: Networks


class GuardMiddleware:
    """Blocks AI-training crawlers and bulk scrapers; serves robots.txt and ai.txt.

    ``app.add_middleware(GuardMiddleware, rules="rules/default.yaml")`` in Starlette or
    FastAPI, or ``GuardMiddleware(app, ...)`` around any ASGI app.

    :param rules: rules file path, or an already loaded :class:`Policy`. Defaults to the
        shipped rules. A bad file raises :class:`guard.errors.ConfigError` here; built inside a
        running server (Starlette's ``add_middleware`` builds it at the first event), it fails
        the lifespan startup with the same message instead, so the server exits.
    :param store: counter store. Default: Redis when ``redis_url`` (or the rules file's
        ``redis.url``) is set, else the embedded memory store.
    :param redis_url: ``redis://host:port/db`` or ``redis+cluster://host:port``.
    :param trusted_proxies: CIDRs of proxies whose X-Forwarded-For is believed.
    :param clock: seconds since the epoch; injectable for tests.
    :param ranges_dir: directory of published crawler IP ranges (defaults to the
        ``ranges`` folder beside the rules file).
    :param reverse_dns: the forward-confirmed reverse DNS checker (default: the system
        resolver, in worker threads; off when the rules say ``reverse_dns.enabled: false``).
    :param registry: a prometheus-client registry to add guard's metrics to (default: its own,
        served on the rules file's ``metrics.path`` if set).
    :param reload_interval: seconds between checks of the rules files for changes (0: only
        on SIGHUP or :meth:`reload`).
    :param track_types: named track-id normalisers the rules may use as ``{track:<name>}``
        (see :func:`guard.register_track_type`), registered before the rules are loaded.
    :param consent: artists' opt-ins to AI use (see docs/consent.md); ``consent_lookup``
        (async, artist id -> consents) and ``artist_resolver`` (track id -> artist id) are
        the application's side of it.
    :param sessions: session settings (None: sessions off); see docs/sessions.md.
    :param session_keys: the keys that sign sessions (default: from the settings' key file
        or environment variable).

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
        registry: CollectorRegistry | None = None,
        reload_interval: float = 5.0,
        track_types: dict[str, TrackType] | None = None,
        consent: ConsentSettings | None = None,
        consent_lookup: Any = None,
        artist_resolver: Any = None,
        sessions: SessionSettings | None = None,
        session_keys: SessionKeys | None = None,
    ) -> None:
        self.app = app
        for name, normaliser in (track_types or {}).items():
            register_track_type(name, normaliser)
        self.startup_error: ConfigError | None = None
        try:
            policy = rules if isinstance(rules, Policy) else load_rules(rules or default_rules_path())
        except ConfigError as error:
            if not inside_a_running_server():
                raise
            self.startup_error = error  # built lazily by the server: fail its lifespan startup instead
            return
        self.rules_path = None if isinstance(rules, Policy) else Path(rules or default_rules_path())
        settings = policy.redis or RedisSettings()
        redis_url = redis_url or settings.url
        if store is None and redis_url:
            from guard.stores.redis import RedisStore

            fallback = MemoryStore(policy.memory_max_entries)
            store = RedisStore.from_url(redis_url, timeout=settings.timeout, fail=settings.fail, fallback=fallback)
        self._ranges_dir = Path(ranges_dir) if ranges_dir is not None else None
        self.guard = Guard(
            policy,
            store,
            clock=clock,
            trusted_proxies=trusted_proxies,
            verifier=RangeVerifier.from_directory(self._ranges_for(policy)),
            namespace=settings.namespace,
            rdns=reverse_dns,
            hosting=HostingRanges.from_directory(self._ranges_for(policy) / "hosting"),
            sessions=sessions,
        )
        self.sessions = Sessions(sessions, session_keys or load_keys(sessions)) if sessions is not None else None
        self.observer = Observer(registry, policy.sample_allows)
        self.observer.watch_store(self.guard.store)
        client = getattr(self.guard.store, "client", None)  # the Redis store's: feeds `guard top`
        self.top = TopCounter(client, settings.namespace) if client is not None else None
        self.consent: ConsentGate | None = None
        if consent is not None:
            self.consent = build_gate(
                consent,
                self.guard,
                base_dir=Path(policy.source).parent,
                lookup=consent_lookup,
                resolver=artist_resolver,
                redis_url=redis_url,
                redis_client=client,
                namespace=settings.namespace,
                registry=self.observer.registry,
            )
        self.reload_interval = reload_interval
        self._published = self._publish(policy)
        self._lock = asyncio.Lock()
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task | None = None
        self._flusher: asyncio.Task | None = None
        self._stamps = self._file_stamps(policy)
        warn_if_counters_split(self.guard.store)

    @property
    def policy(self) -> Policy:
        return self.guard.policy

    # -- the request path ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.startup_error is not None:
            await refuse(self.startup_error, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._watch_loop is not asyncio.get_running_loop():
            self._start_watching()
        published = self._published
        if published.upstream_pending:
            await self._fetch_upstream_robots()
            published = self._published
        path = scope.get("path", "")
        consent = self.consent
        directive = await consent.directive(scope, path, published.directives) if consent is not None else None
        directive = directive or published.directives.get(path)
        if directive is not None:
            body, content_type = directive
            await _respond(send, 200, body, cache=True, head=scope.get("method") == "HEAD", content_type=content_type)
            return
        policy = self.guard.policy
        if path == policy.metrics_path and _peer_in(scope, published.metrics_readers):
            body = generate_latest(self.observer.registry)
            await _respond(send, 200, body, content_type=CONTENT_TYPE_LATEST.encode())
            return
        guard = self.guard
        sessions = self.sessions
        if sessions is not None and path == sessions.settings.challenge.path:
            await _reply(send, await sessions.answer(guard, scope), scope.get("method") == "HEAD")
            return
        started = time.perf_counter()
        verdict = facts = signed = reply = None
        cookie: list[tuple[bytes, bytes]] = []
        try:
            client = guard.resolver.resolve(scope)
            signed = self._signature(scope) if guard.signatures is not None else None
            query = scope.get("query_string", b"").decode("latin-1")
            user_agent = _user_agent(scope)
            reading = sessions.read(scope, client, user_agent, guard.clock()) if sessions is not None else None
            session = reading.session if reading is not None else None
            facts = guard.facts(client, user_agent, scope.get("path", "/"), signed, query, session)
            exempt = guard.is_exempt(facts.where.group)
            decision = None if exempt else await guard.decide(facts)
            if decision is not None:
                self.observer.record(facts, decision, time.perf_counter() - started, shadow=policy.shadow)
                if self.top is not None:
                    self.top.add(facts, decision)
                if reading is not None and sessions is not None:  # a new cookie, or the challenge
                    cookie, reply = sessions.respond(reading, decision, facts, policy.shadow)
        except Exception:  # the guard must never take the site down
            log.exception("guard: error while checking a request; letting it through")
            decision, exempt, reply = None, True, None
        if consent is not None and facts is not None and not exempt:
            try:  # artists' opt-ins: may open content to a licensed AI agent, or refuse it
                verdict = await consent.check(scope, facts, signed, decision, published.signals)
            except Exception:
                log.exception("guard: error in the consent check; the rules decide alone")
            if verdict is not None and (verdict.serves or not policy.shadow):
                await consent.send(verdict, self.app, scope, receive, _with_headers(send, cookie) if cookie else send)
                return
        if reply is not None:
            await _reply(send, reply, scope.get("method") == "HEAD")
            return
        if decision is None or decision.allowed or policy.shadow:
            extra = [] if exempt else published.signals + cookie
            await self.app(scope, receive, _with_headers(send, extra) if extra else send)
            return
        await _deny(send, decision, head=scope.get("method") == "HEAD")

    # -- what the policy publishes ---------------------------------------------------------

    def _ranges_for(self, policy: Policy) -> Path:
        return self._ranges_dir if self._ranges_dir is not None else Path(policy.source).parent / "ranges"

    def _publish(self, policy: Policy) -> Published:
        ours = robots_txt(policy)
        directives: dict[str, tuple[bytes, bytes]] = {}
        if policy.ai_txt:
            directives["/ai.txt"] = (ai_txt(policy).encode(), TEXT)
        if policy.tdmrep:
            directives["/.well-known/tdmrep.json"] = (tdmrep_json(policy).encode(), JSON)
        published = Published(
            directives, content_headers(policy), ours, policy.merge_robots == "upstream", Networks(policy.metrics_allow)
        )
        theirs = None
        if policy.merge_robots and not published.upstream_pending:
            theirs = Path(policy.merge_robots).read_text(encoding="utf-8", errors="replace")
        self._set_robots(published, policy, theirs)
        return published

    def _set_robots(self, published: Published, policy: Policy, theirs: str | None) -> None:
        """Serve (and enforce) our robots.txt merged with the application's."""
        text = merge_robots(published.ours, theirs)
        if policy.robots_txt:
            published.directives["/robots.txt"] = (text.encode(), TEXT)
        self.guard.robots = RobotsTxt.parse(text) if policy.enforce_robots else None

    async def _fetch_upstream_robots(self) -> None:
        """Ask the wrapped application for its own /robots.txt, once per policy."""
        async with self._lock:
            published = self._published
            if not published.upstream_pending:
                return
            published.upstream_pending = False
            chunks: list[bytes] = []
            status = [0]

            async def receive() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                elif message["type"] == "http.response.body" and sum(map(len, chunks)) < ROBOTS_LIMIT:
                    chunks.append(message.get("body", b""))

            scope: Scope = {
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
                self._set_robots(published, self.guard.policy, b"".join(chunks).decode("utf-8", "replace"))

    # -- hot reload -------------------------------------------------------------------------

    async def reload(self, why: str = "requested") -> bool:
        """Load the rules file again and swap it in; a bad file keeps the last good rules."""
        if self.rules_path is None:
            return False
        async with self._lock:
            try:
                policy = await asyncio.to_thread(load_rules, self.rules_path)
                verifier = await asyncio.to_thread(RangeVerifier.from_directory, self._ranges_for(policy))
                hosting = await asyncio.to_thread(HostingRanges.from_directory, self._ranges_for(policy) / "hosting")
            except Exception as exc:  # ConfigError above all: say where, keep enforcing the old rules
                log.error("guard: rules not reloaded (%s), keeping the last good rules: %s", why, exc)
                self._stamps = self._file_stamps(self.guard.policy)
                return False
            previous = self.guard.policy
            self.guard.use_policy(policy, verifier, hosting)
            try:
                self._published = self._publish(policy)
            except Exception as exc:
                self.guard.use_policy(previous)
                log.error("guard: rules not reloaded (%s), keeping the last good rules: %s", why, exc)
                return False
            self.observer.sample_allows = policy.sample_allows
            self._stamps = self._file_stamps(policy)
            log.warning("guard: rules reloaded from %s (%s): %d rules", self.rules_path, why, len(policy.rules))
            return True

    def _file_stamps(self, policy: Policy) -> dict[str, float]:
        if self.rules_path is None:
            return {}
        files = [self.rules_path, Path(policy.catalogue.source), *self._ranges_for(policy).glob("*.json")]
        if policy.signatures_file:
            files.append(Path(policy.signatures_file))
        stamps = {}
        for file in files:
            try:
                stamps[str(file)] = file.stat().st_mtime
            except OSError:
                stamps[str(file)] = -1.0
        return stamps

    def _start_watching(self) -> None:
        """Once per event loop: poll the rules files, and reload on SIGHUP where allowed."""
        loop = self._watch_loop = asyncio.get_running_loop()
        if self.top is not None:
            self._flusher = loop.create_task(self.top.run())
        if self.rules_path is None:
            return
        if self.reload_interval > 0:
            self._watcher = loop.create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, ...
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            stamps = await asyncio.to_thread(self._file_stamps, self.guard.policy)
            if stamps != self._stamps:
                await self.reload("file changed")

    # -- signed agents ----------------------------------------------------------------------

    def _signature(self, scope: Scope) -> SignatureCheck | None:
        """The request's Web Bot Auth check, or None when it carries no signature."""
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        if "signature-input" not in headers or self.guard.signatures is None:
            return None
        raw_path = scope.get("raw_path") or scope.get("path", "/").encode()
        return self.guard.signatures.verify(
            headers,
            method=scope.get("method", "GET"),
            authority=(headers.get("host") or [""])[0],
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            now=self.guard.clock(),
        )


def _peer_in(scope: Scope, networks: Networks) -> bool:
    """Whether the socket peer (never a forwarded address) is in ``networks``."""
    peer = scope.get("client")
    return peer is not None and isinstance(peer[0], str) and networks.contains_text(peer[0])


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


async def _reply(send: Send, reply: Reply, head: bool) -> None:
    extra = list(reply.headers)
    await _respond(send, reply.status, reply.body, extra=extra, head=head, content_type=reply.content_type)


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
