"""GuardMiddleware: the pure ASGI middleware in front of the application.

Only HTTP requests are checked; lifespan and websocket scopes pass straight through.
Allowed requests reach the app untouched (their ``receive`` and ``send`` are the
server's own, so streaming and Range responses are not buffered or altered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from guard.canaries.bait import sitemap, with_bait
from guard.canaries.decoy import Decoy
from guard.canaries.trap import CanaryTrap, hit_counter
from guard.consent.gate import ConsentGate, build_gate
from guard.consent.settings import ConsentSettings
from guard.errors import ConfigError
from guard.fingerprints.edge import judge, read_fingerprint, with_fingerprint
from guard.headers import request_headers
from guard.identity.ranges import HostingRanges, RangeVerifier, hosting_directory
from guard.identity.rdns import ReverseDNSVerifier
from guard.identity.signatures import check_signature
from guard.ops.collector import tune_gc
from guard.ops.metrics import MetricsEndpoint
from guard.ops.observe import Observer
from guard.ops.reload import RulesReloader
from guard.ops.top import TopCounter
from guard.pacing import Pacer
from guard.policy.engine import Clock, Guard
from guard.policy.rules import Policy, RedisSettings, load_rules, ranges_dir
from guard.policy.tracks import TrackType, register_track_type
from guard.privatetoken import PrivateTokens
from guard.responses import deny, reply, respond, with_headers
from guard.sessions.service import Reply, Sessions, load_keys
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import SessionKeys
from guard.signals.publisher import Publisher
from guard.signals.upstream import UpstreamRobots
from guard.startup import inside_a_running_server, refuse, under_a_server, warn_if_counters_split
from guard.stores.base import Store
from guard.stores.memory import MemoryStore

log = logging.getLogger("guard")

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"
#: What a challenge answer gets when guard fails to check it: refused, no session, no 500.
UNCHECKED_ANSWER = Reply(403, b"403 Forbidden: this answer could not be checked; reload the page for a new one.\n")


def default_rules_path() -> Path:
    """The shipped rules file (rules/default.yaml in a checkout, packaged as guard/shipped in a wheel)."""
    if DEFAULT_RULES.exists():
        return DEFAULT_RULES
    from importlib.resources import files

    return Path(str(files("guard.shipped").joinpath("default.yaml")))


def budget_key(store: Store | None) -> bytes | None:
    """The key of the budgets' hash: ``$GUARD_BUDGET_KEY``, else random for the embedded store.

    Instances that share Redis must hash alike, so without the variable they fall back to
    a key anyone can derive, and guard says so once at start-up.
    """
    configured = os.environ.get("GUARD_BUDGET_KEY", "").strip()
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    if store is None or isinstance(store, MemoryStore):
        return secrets.token_bytes(32)  # one process: nobody else has to agree
    log.warning(
        "guard: no $GUARD_BUDGET_KEY: hour and day budgets hash tracks with a key anyone can derive; "
        "set the same secret on every instance"
    )
    return None


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
    :param trusted_proxies: CIDRs of the proxies whose forwarded header (the rules' ``clients.forwarded``,
        X-Forwarded-For by default) names the client; see docs/proxies.md.
    :param clock: seconds since the epoch; injectable for tests.
    :param ranges_dir: directory of published crawler IP ranges (defaults to the
        ``ranges`` folder beside the catalogue the rules name).
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
    :param tune_gc: on the first request, freeze what start-up made and make full garbage
        collections rare (see :mod:`guard.ops.collector`; it changes the whole process).

    Redis key prefix, call timeout and fail mode come from the rules file's ``redis:`` section.
    """

    #: An error while checking a request lets it through (False: it propagates to the caller).
    fail_open = True

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
        tune_gc: bool = False,
    ) -> None:
        self.app = app
        self._tune_gc = tune_gc
        for name, normaliser in (track_types or {}).items():
            register_track_type(name, normaliser)
        self.startup_error: ConfigError | None = None
        try:
            policy = rules if isinstance(rules, Policy) else load_rules(rules or default_rules_path())
        except ConfigError as error:
            if not (inside_a_running_server() or under_a_server()):
                raise
            self.startup_error = error  # a server's app: fail its lifespan startup instead (one line)
            return
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
            hosting=HostingRanges.from_directory(self._hosting_for(policy)),
            sessions=sessions,
            budget_key=budget_key(store),
        )
        self._session_override, self._session_keys = sessions, session_keys
        self.sessions = self._sessions_for(policy)
        self.pacer = Pacer()  # audio at playback pace (guard/pacing.py)
        #: Whether a sweep is under way now (set by the sweep detector; default: the rules' setting).
        self.sweeping: Callable[[], bool] = lambda: self.tokens is not None and self.tokens.settings.sweep
        self.tokens = PrivateTokens(policy.private_tokens) if policy.private_tokens else None
        self.observer = Observer(registry, policy.sample_allows)
        self.observer.watch_store(self.guard.store)
        client = getattr(self.guard.store, "client", None)  # the Redis store's: feeds `guard top`
        self.top = TopCounter(client, settings.namespace) if client is not None else None
        self.consent: ConsentGate | None = None
        consent = consent if consent is not None else policy.consent
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
        lock = asyncio.Lock()  # one change of the rules or of what they publish at a time
        self.publisher = Publisher(self.guard, UpstreamRobots(app), lock)
        self.metrics = MetricsEndpoint(self.observer.registry, policy)
        self._canary_hits = hit_counter(self.observer.registry)
        self.canaries: CanaryTrap | None = None
        self.canaries = self._canaries_for(policy)
        rules_path = None if isinstance(rules, Policy) else Path(rules or default_rules_path())
        self.reloader = RulesReloader(
            rules_path,
            reload_interval,
            current=lambda: self.guard.policy,
            apply=self._apply,
            ranges_for=self._ranges_for,
            lock=lock,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: asyncio.Task | None = None
        self._evicting: asyncio.Task | None = None
        warn_if_counters_split(self.guard.store)

    @property
    def policy(self) -> Policy:
        return self.guard.policy

    @property
    def rules_path(self) -> Path | None:
        """The rules file reloads read (None when the middleware was given a loaded Policy)."""
        return self.reloader.rules_path

    # -- the request path ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.startup_error is not None:
            await refuse(self.startup_error, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._loop is not asyncio.get_running_loop():
            self._start_background()
        published = self.publisher.current
        if published.upstream_pending:  # once per policy: merge in the application's robots.txt
            published = await self.publisher.ready()
        path = scope.get("path", "")
        consent = self.consent
        directive = await consent.directive(scope, path, published.directives) if consent is not None else None
        directive = directive or published.directives.get(path)
        if directive is not None:
            body, content_type = directive
            await respond(send, 200, body, cache=True, head=scope.get("method") == "HEAD", content_type=content_type)
            return
        trap = self.canaries
        if trap is not None and path == trap.settings.sitemap:  # bait: robots.txt disallows it
            await respond(
                send,
                200,
                sitemap("", trap.links(16)),
                head=scope.get("method") == "HEAD",
                content_type=b"application/xml",
            )
            return
        if self.metrics.serves(scope, path):
            await self.metrics.respond(send)
            return
        guard = self.guard
        policy = guard.policy
        sessions = self.sessions
        if sessions is not None and path == sessions.settings.challenge.path:
            try:
                checked = await sessions.answer(guard, scope)
            except Exception:  # an answer guard cannot check mints no session, and is no 500
                log.exception("guard: error while checking a challenge answer; refusing it")
                checked = UNCHECKED_ANSWER
            await reply(send, checked, scope.get("method") == "HEAD")
            return
        started = time.perf_counter()
        verdict = facts = signed = answer = None
        canary: Decoy | None = None
        cookie: list[tuple[bytes, bytes]] = []
        try:
            headers = request_headers(scope)  # one pass over them for all that follows
            client = guard.resolver.resolve(scope, headers)
            ja4 = None
            if policy.fingerprint_header is not None:  # the edge's TLS fingerprint, from trusted proxies only
                ja4 = read_fingerprint(headers, client, policy.fingerprint_header)
                client = with_fingerprint(client, ja4, policy.fingerprints)
            signed = check_signature(guard.signatures, scope, guard.clock) if guard.signatures is not None else None
            query_string = scope.get("query_string")
            query = query_string.decode("latin-1") if query_string else ""
            ua_line = headers.get(b"user-agent")
            user_agent = ua_line.decode("latin-1") if ua_line is not None else None
            reading = sessions.read(scope, client, user_agent, guard.clock(), headers) if sessions is not None else None
            session = reading.session if reading is not None else None
            facts = guard.facts(client, user_agent, scope.get("path", "/"), signed, query, session)
            if ja4 is not None:
                judge(facts, ja4, policy.fingerprints)
            exempt = guard.is_exempt(facts.where.group)
            if trap is not None and not exempt and trap.is_canary(facts.where.track):
                await trap.spring(guard, facts, ja4)
                canary = trap.decoy(facts.where.group, facts.where.track or "")
            decision = None if exempt or canary is not None else await guard.decide(facts)
            if decision is not None:
                self.observer.record(facts, decision, time.perf_counter() - started, shadow=policy.shadow)
                if self.top is not None:
                    self.top.add(facts, decision)
                if reading is not None and sessions is not None:  # a new cookie, or the challenge
                    cookie, answer = sessions.respond(reading, decision, facts, policy.shadow)
                    tokens = self.tokens  # a sweep escalates young sessions; a Private Access Token skips it
                    sweep = tokens is not None and not policy.shadow and self.sweeping()
                    if tokens and sweep and answer is None and tokens.escalates(facts, decision, reading.now, sweep):
                        authorization = headers.get(b"authorization")
                        cookie, answer = tokens.settle(sessions, reading, decision, facts, authorization)
        except Exception:  # the guard must never take the site down
            if not self.fail_open:
                raise  # forward-auth refuses instead (guard.forwardauth)
            log.exception("guard: error while checking a request; letting it through")
            decision, exempt, answer = None, True, None
        if canary is not None:  # answered as the application would: the scraper learns nothing
            await respond(
                send, 200, canary.body, head=scope.get("method") == "HEAD", content_type=canary.content_type.encode()
            )
            return
        if consent is not None and facts is not None and not exempt:
            try:  # artists' opt-ins: may open content to a licensed AI agent, or refuse it
                verdict = await consent.check(scope, facts, signed, decision, published.signals)
            except Exception:
                log.exception("guard: error in the consent check; the rules decide alone")
            if verdict is not None and (verdict.serves or not policy.shadow):
                await consent.send(verdict, self.app, scope, receive, with_headers(send, cookie) if cookie else send)
                return
        if answer is not None:  # the session's challenge
            if trap is not None and answer.content_type.startswith(b"text/html"):
                answer = dataclasses.replace(answer, body=with_bait(answer.body, trap.links(2)))
            await reply(send, answer, scope.get("method") == "HEAD")
            return
        if decision is None or decision.allowed or policy.shadow:
            extra = [] if exempt else published.signals + cookie
            paced = self.pacer.wrap(send, None if exempt or policy.shadow else policy.pacing, facts)
            await self.app(scope, receive, with_headers(paced, extra) if extra else paced)
            return
        await deny(send, decision, head=scope.get("method") == "HEAD")

    # -- around the request path ----------------------------------------------------------

    async def reload(self, why: str = "requested") -> bool:
        """Load the rules file again and swap it in; a bad file keeps the last good rules."""
        return await self.reloader.reload(why)

    def _apply(self, policy: Policy, verifier: RangeVerifier, hosting: HostingRanges) -> None:
        """Swap a reloaded policy in, with what it publishes; raises (and rolls back) if it cannot publish."""
        previous = self.guard.policy
        self.guard.use_policy(policy, verifier, hosting)
        try:
            self.publisher.publish(policy)
        except Exception:
            self.guard.use_policy(previous)
            raise
        self.metrics.use(policy)
        self.canaries = self._canaries_for(policy)
        self.observer.sample_allows = policy.sample_allows
        self.sessions = self._sessions_for(policy)  # a rolled key file is read here, on reload only
        self.tokens = PrivateTokens(policy.private_tokens) if policy.private_tokens else None

    def _canaries_for(self, policy: Policy) -> CanaryTrap | None:
        """The trap for a reloaded policy: the same one while its settings stay (its counter is registered once)."""
        if policy.canaries is None:
            return None
        if self.canaries is not None and self.canaries.settings == policy.canaries:
            return self.canaries
        trap = CanaryTrap(policy.canaries, self._canary_hits)
        if self.canaries is not None:
            trap.listeners = self.canaries.listeners
        return trap

    def _sessions_for(self, policy: Policy) -> Sessions | None:
        """Sessions as the policy (or the constructor) configures them, with their keys loaded."""
        settings = self._session_override or policy.sessions
        if settings is None:
            return None
        # On a Redis Cluster a session's counters are per client network: it stays on its own.
        follow = not getattr(self.guard.store, "cluster", False)
        return Sessions(settings, self._session_keys or load_keys(settings), follow)

    def _ranges_for(self, policy: Policy) -> Path:
        return self._ranges_dir if self._ranges_dir is not None else ranges_dir(policy)

    def _hosting_for(self, policy: Policy) -> Path:
        """Hosting providers' ranges: ``ranges/hosting`` beside the rules file if there, else beside the catalogue."""
        return hosting_directory(policy.source, self._ranges_for(policy))

    def _start_background(self) -> None:
        """Once per event loop: flush `guard top` tallies, watch the rules files."""
        loop = self._loop = asyncio.get_running_loop()
        if self._tune_gc:
            self._tune_gc = False  # once per process
            tune_gc()
        if self.top is not None:
            self._flusher = loop.create_task(self.top.run())
        warn = getattr(self.guard.store, "warn_if_evicting", None)  # the Redis store: can a flood flush budgets?
        if warn is not None:
            self._evicting = loop.create_task(warn())
        if self.canaries is not None:
            self.canaries.warn_if_unshared()
        self.reloader.start(loop)
