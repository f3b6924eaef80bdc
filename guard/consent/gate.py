"""The consent gate: AI use of an artist's content only by opt-in, verified and licensed.

For a request by an AI agent (a catalogue category that ``usages`` maps to a usage) on
content whose artist is known, the gate's answer replaces the rules' block:

1. the artist has no consent covering this usage, operator, track and time: **403**,
   whatever licence the agent shows;
2. the agent's identity is not verified (published ranges or a Web Bot Auth signature):
   **403**;
3. a licence token (``Authorization: License <token>``) that covers the operator, the
   artist and the usage, and is current: **200**;
4. pay per crawl (Cloudflare's protocol): a signed request whose ``crawler-max-price``
   covers, or whose ``crawler-exact-price`` equals, the price, with the price header among
   the signed components: **200** with ``crawler-charged``;
5. otherwise **402** with ``crawler-price`` and RSL's pointers (``WWW-Authenticate:
   License ...`` and the ``Link`` to license.xml).

Every 200 is recorded in the ledger before the content is served. Requests of other
visitors are decided by the rules as before; the gate only gives their responses the
artist's signals (from cache, never waiting). Directives are always free: the gate serves
/license.xml and adds its lines to robots.txt before anything is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard.consent.artists import ArtistMapper, TrackResolver
from guard.consent.ledger import Access, FileLedger, Ledger, RedisLedger
from guard.consent.licences import Licence, Licences, load_key, token_from
from guard.consent.model import Consent, ConsentError, Price
from guard.consent.settings import ConsentSettings
from guard.consent.sources import UNKNOWN, AppLookup, AppSource, ConsentSource, FileSource, RedisSource
from guard.identity.signatures import SignatureCheck
from guard.lru import LRU
from guard.signals.rsl import LICENSE_PATH, RSL_TYPE, artist_headers, license_xml, link_header, robots_additions

log = logging.getLogger("guard.consent")

_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$")
#: Seconds a consent lookup or a ledger write may take (the counters' timeout is tighter).
CALL_TIMEOUT = 0.5
_PRICE_HEADERS = (b"crawler-exact-price", b"crawler-max-price")


@dataclass
class Verdict:
    """The gate's answer: serve the application's response with ``headers`` added, or
    answer ``status`` itself."""

    status: int  # 200: the application answers
    reason: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    artist: str | None = None
    usage: str | None = None
    consent: Consent | None = None
    licence: Licence | None = None
    charged: Price | None = None
    outcome: str = "served"  # licensed | paid | refused | payment_required | bad_request | unaccounted

    @property
    def serves(self) -> bool:
        return self.status == 200


class ConsentGate:
    """Consent, licences, pay per crawl and accounting for one middleware."""

    def __init__(
        self,
        settings: ConsentSettings,
        source: ConsentSource,
        ledger: Ledger,
        licences: Licences,
        guard: Any,
        *,
        mapper: ArtistMapper | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.ledger = ledger
        self.licences = licences
        self.guard = guard  # the engine: its policy, clock and range verifier
        self.mapper = mapper or ArtistMapper(settings.artist_paths)
        self.requests = Counter(
            "guard_consent_requests",
            "AI requests on opted-in artists' content, by usage, operator and outcome",
            ["usage", "operator", "outcome"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listed = asyncio.Event()
        self._own_client: Any = None  # a Redis client the gate opened, closed with it
        self._task: asyncio.Task | None = None
        self._directives: dict[tuple[str, str], tuple[Any, Any, int, bytes]] = {}
        self._urls: dict[tuple[str, str | None], str] = {}
        self._signals: LRU[tuple[str, str], tuple[Any, Any, int, list[tuple[bytes, bytes]]]] = LRU(4096)

    @property
    def clock(self) -> Callable[[], float]:
        return self.guard.clock

    # -- directives (always free) --------------------------------------------------------

    async def directive(
        self, scope: Scope, path: str, directives: Mapping[str, tuple[bytes, bytes]]
    ) -> tuple[bytes, bytes] | None:
        """/license.xml, and robots.txt with the consent lines; None for any other path."""
        if path != LICENSE_PATH and path != "/robots.txt":
            return None
        self._ensure_running()
        if not self._listed.is_set():  # the very first ones wait for the first listing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listed.wait(), 2.0)
        robots = directives.get("/robots.txt")
        if path == "/robots.txt" and robots is None:
            return None
        url = self.license_url(scope)
        listing = self.source.listing()
        minute = int(self.clock() // 60)  # consents that end drop out within the minute
        key = (path, url)
        cached = self._directives.get(key)
        if cached is not None and cached[0] is listing and cached[1] is robots and cached[2] == minute:
            return cached[3], (RSL_TYPE if path == LICENSE_PATH else robots[1])
        now = self.clock()
        patterns = self.settings.artist_paths
        if path == LICENSE_PATH:
            body = license_xml(listing, patterns, self.settings.price, now, self.settings.authorization_uri).encode()
        else:
            assert robots is not None
            body = robots_additions(robots[0].decode(), url, listing, patterns, now).encode()
        if len(self._directives) > 64:  # one entry per host at most; a bound against odd Hosts
            self._directives.clear()
        self._directives[key] = (listing, robots, minute, body)
        return body, (RSL_TYPE if path == LICENSE_PATH else robots[1])  # type: ignore[index]

    def license_url(self, scope: Scope) -> str:
        """The absolute URL of license.xml: the configured origin, else the request's Host."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + LICENSE_PATH
        host = _header(scope, b"host")
        key = (scope.get("scheme", "http"), host)
        url = self._urls.get(key)
        if url is None:
            url = f"{key[0]}://{host}{LICENSE_PATH}" if host and _HOST.match(host) else LICENSE_PATH
            if len(self._urls) > 64:  # a bound against odd Hosts
                self._urls.clear()
            self._urls[key] = url
        return url

    # -- the request path ------------------------------------------------------------------

    async def check(
        self,
        scope: Scope,
        facts: Any,
        signed: SignatureCheck | None,
        decision: Any,
        signals: list[tuple[bytes, bytes]],
        *,
        record: bool = True,
    ) -> Verdict | None:
        """The gate's verdict for a checked request; None when the rules decide alone."""
        self._ensure_running()
        identity = facts.identity
        usage = self.settings.usages.get(identity.category)
        if usage is None or identity.agent is None:
            return self._signals_only(scope, facts, decision, signals)
        artist = await self.mapper.resolve(facts.path, facts.where.track)
        if artist is None:
            return None  # not an artist's content: the rules decide (AI use is blocked there)
        verdict = await self._decide(scope, facts, signed, usage, artist)
        if verdict.consent is None and decision is not None and not decision.allowed:
            return None  # not opted in and the rules refuse: their 403 stands, as without consent
        if verdict.serves and record:
            accounted = await self._account(scope, facts, verdict)
            if accounted is None:  # the consent changed since it was read: decide again on the fresh one
                verdict = await self._decide(scope, facts, signed, usage, artist, fresh=True)
                accounted = await self._account(scope, facts, verdict) if verdict.serves else verdict
            verdict = accounted if accounted is not None else _unaccounted()
        if record:
            self.requests.labels(usage, identity.agent.operator, verdict.outcome).inc()
        return verdict

    def _signals_only(self, scope: Scope, facts: Any, decision: Any, signals: list) -> Verdict | None:
        """Visitors that are not AI: the rules decide; the response carries the artist's signals."""
        if decision is not None and not decision.allowed:
            return None
        artist = self.mapper.peek(facts.path, facts.where.track)
        if artist is None or artist is UNKNOWN:
            return Verdict(200, headers=[*signals, link_header(self.license_url(scope))])
        record = self.source.peek(artist)  # type: ignore[arg-type]
        if record is UNKNOWN:
            record = None  # not known yet: the conservative signals
        url = self.license_url(scope)
        policy, minute = self.guard.policy, int(self.clock() // 60)
        cached = self._signals.peek((artist, url))  # type: ignore[arg-type]
        if cached is not None and cached[0] is record and cached[1] is policy and cached[2] == minute:
            return Verdict(200, headers=cached[3])
        headers = artist_headers(policy, record, self.clock(), url)  # type: ignore[arg-type]
        self._signals.put((artist, url), (record, policy, minute, headers))  # type: ignore[arg-type]
        return Verdict(200, headers=headers)

    async def _decide(
        self, scope: Scope, facts: Any, signed: SignatureCheck | None, usage: str, artist: str, fresh: bool = False
    ) -> Verdict:
        identity = facts.identity
        agent = identity.agent
        now = self.clock()
        track = facts.where.track
        record = await (self.source.get(artist) if fresh else self.source.current(artist))
        consent = record.permits(usage, agent.operator, track, now) if record is not None else None
        base: dict[str, Any] = {"artist": artist, "usage": usage, "consent": consent}
        if consent is None:
            why = f"artist {artist} has not opted in to {usage}" + (f" by {agent.operator}" if record else "")
            return Verdict(403, why, [], outcome="refused", **base)
        if not self._verified(facts):
            why = f"{agent.name} is not verified (published ranges or a Web Bot Auth signature are required)"
            return Verdict(403, why, [], outcome="refused", **base)
        url = self.license_url(scope)
        signals = artist_headers(self.guard.policy, record, now, url)
        charge = None if consent.licence_only else consent.price or self.settings.price
        token = token_from(_header(scope, b"authorization"))
        if token is not None:
            licence = self.licences.verify(token)
            if isinstance(licence, str):
                return self._payment_required(url, charge, "invalid_token", licence, base)
            problem = licence.current(now) or licence.covers(agent.operator, artist, usage)
            if problem is None:
                return Verdict(200, f"licence {licence.id}", signals, licence=licence, outcome="licensed", **base)
            return self._payment_required(url, charge, "invalid_token", problem, base)
        offers = [(name, value) for name in _PRICE_HEADERS if (value := _header(scope, name)) is not None]
        if not offers:
            return self._payment_required(url, charge, "invalid_request", "a licence or a payment is required", base)
        return self._pay(facts, signed, offers, charge, signals, url, base)

    def _verified(self, facts: Any) -> bool:
        identity = facts.identity
        if identity.verified is not None:
            return identity.verified
        verifier = self.guard.verifier
        return verifier is not None and verifier.verify(identity.agent.name, facts.client) is True

    def _pay(
        self,
        facts: Any,
        signed: SignatureCheck | None,
        offers: list[tuple[bytes, str]],
        charge: Price | None,
        signals: list[tuple[bytes, bytes]],
        url: str,
        base: dict[str, Any],
    ) -> Verdict:
        """Cloudflare's pay per crawl: one price header, signed, that covers the price."""
        if charge is None:
            return self._payment_required(url, None, "invalid_request", "this content is licensed, not sold", base)
        if len(offers) > 1:
            return _bad("ConflictingPriceHeaders", "send one of crawler-exact-price and crawler-max-price", base)
        name, text = offers[0]
        try:
            offer = Price.parse(text)
        except ConsentError:
            return _bad("InvalidCrawlerPriceValue", f"{name.decode()} is not like 'USD 0.01'", base)
        identity = facts.identity
        strong = (
            signed is not None
            and signed.ok
            and identity.evidence == "web bot auth"
            and identity.verified
            and name.decode() in signed.covered
        )
        if not strong:
            why = f"a payment must be signed with Web Bot Auth, {name.decode()} among the signed components"
            return _bad("StrongAuthRequired", why, base)
        exact = name == b"crawler-exact-price"
        short = offer.amount != charge.amount if exact else offer.amount < charge.amount
        if offer.currency != charge.currency or short:
            error = "InvalidCrawlerExactPrice" if exact else "InvalidCrawlerMaxPrice"
            verdict = self._payment_required(url, charge, "invalid_request", f"the price is {charge}", base)
            verdict.headers.append((b"crawler-error", error.encode()))
            return verdict
        headers = [*signals, (b"crawler-charged", str(charge).encode())]
        return Verdict(200, f"paid {charge}", headers, charged=charge, outcome="paid", **base)

    def _payment_required(self, url: str, charge: Price | None, error: str, why: str, base: dict[str, Any]) -> Verdict:
        authorization_uri = self.settings.authorization_uri or url
        challenge = (
            f'License error="{error}", error_description="{_quoted(why)}", authorization_uri="{authorization_uri}"'
        )
        headers = [(b"www-authenticate", challenge.encode("latin-1", "replace")), link_header(url)]
        if charge is not None:
            headers.append((b"crawler-price", str(charge).encode()))
        return Verdict(402, why, headers, outcome="payment_required", **base)

    async def _account(self, scope: Scope, facts: Any, verdict: Verdict) -> Verdict | None:
        """The verdict once its access is recorded; 503 if it cannot be; None if the consent
        it was decided on has changed since (nothing recorded)."""
        agent = facts.identity.agent
        access = Access(
            time=self.clock(),
            artist=verdict.artist or "",
            track=facts.where.track,
            operator=agent.operator,
            agent=agent.name,
            usage=verdict.usage or "",
            licence=verdict.licence.id if verdict.licence else None,
            price=str(verdict.charged) if verdict.charged else None,
            path=facts.path[:256],
        )
        condition = getattr(self.source, "condition", None)
        try:
            recorded = await self.ledger.record(access, condition(verdict.artist) if condition else None)
        except Exception as exc:  # unaccounted content is not served
            log.error("guard: accounting failed (%s); the request is refused", exc)
            return _unaccounted()
        return verdict if recorded else None

    # -- answering -----------------------------------------------------------------------

    async def send(self, verdict: Verdict, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the application's response with the verdict's headers, or the verdict's error."""
        if verdict.serves:
            await app(scope, receive, _with_headers(send, verdict.headers))
            return
        text = f"{verdict.status} {_TITLES.get(verdict.status, 'Error')}: guard consent: {verdict.reason}.\n"
        text += f"Licensing terms: {self.license_url(scope)}\n"
        body = text.encode("utf-8", "replace")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *verdict.headers,
        ]
        await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    # -- ops -------------------------------------------------------------------------------

    async def explain(self, scope: Scope, facts: Any, signed: SignatureCheck | None) -> dict[str, Any]:
        """Which consent and which licence apply to a request (nothing is recorded)."""
        identity = facts.identity
        usage = self.settings.usages.get(identity.category)
        artist = await self.mapper.resolve(facts.path, facts.where.track)
        report: dict[str, Any] = {"source": self.source.name, "artist": artist, "usage": usage}
        if artist is not None:
            record = await self.source.get(artist)
            report["consents"] = record.to_list() if record else []
        if usage is None or identity.agent is None or artist is None:
            report["verdict"] = None
            return report
        verdict = await self._decide(scope, facts, signed, usage, artist, fresh=True)
        licence = verdict.licence
        report["consent"] = verdict.consent.to_dict() if verdict.consent else None
        report["licence"] = (
            {"id": licence.id, "operator": licence.operator, "expires": licence.expires} if licence else None
        )
        report["verdict"] = {"status": verdict.status, "outcome": verdict.outcome, "reason": verdict.reason}
        return report

    def _ensure_running(self) -> None:
        """Once per event loop: the background refresh of the file or the Redis listing."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._task = loop.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.source.refresh()
            except Exception as exc:
                log.warning("guard: consent refresh failed (%s); keeping what is known", exc)
            self._listed.set()
            await asyncio.sleep(self.settings.refresh)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
        await self.source.close()
        close = getattr(self.ledger, "close", None)
        if close is not None:
            close()
        if self._own_client is not None:
            await self._own_client.aclose()


def _unaccounted() -> Verdict:
    return Verdict(503, "accounting is unavailable", [(b"retry-after", b"5")], outcome="unaccounted")


_TITLES = {400: "Bad Request", 402: "Payment Required", 403: "Forbidden", 503: "Service Unavailable"}


def _bad(error: str, why: str, base: dict[str, Any]) -> Verdict:
    return Verdict(400, why, [(b"crawler-error", error.encode())], outcome="bad_request", **base)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sender


def build_gate(
    settings: ConsentSettings,
    guard: Any,
    *,
    base_dir: str | Path = ".",
    lookup: AppLookup | None = None,
    resolver: TrackResolver | None = None,
    redis_url: str | None = None,
    redis_client: Any = None,
    namespace: str = "guard",
    registry: CollectorRegistry | None = None,
    source: ConsentSource | None = None,
) -> ConsentGate:
    """A gate from settings: the source they name, the ledger the store implies, the key.

    With ``redis_url`` the gate opens its own client, with timeouts for lookups and ledger
    writes rather than the counters' tight ones; else it shares ``redis_client``.
    """
    base = Path(base_dir)
    own = None
    if redis_url:
        from guard.stores.redis import redis_client as connect

        redis_client = own = connect(redis_url, socket_timeout=CALL_TIMEOUT, socket_connect_timeout=CALL_TIMEOUT)
    if source is None:
        if settings.source == "app" or (lookup is not None and settings.source != "redis"):
            if lookup is None:
                raise ConsentError("consent source 'app' needs the application's lookup (consent_lookup=)")
            source = AppSource(lookup, ttl=settings.cache_ttl)
        elif settings.source == "redis":
            if redis_client is None:
                raise ConsentError("consent source 'redis' needs Redis (redis.url or redis_url=)")
            source = RedisSource(redis_client, namespace)
        else:
            if not settings.file:
                raise ConsentError("consent source 'file' needs a consent file")
            source = FileSource(base / settings.file)
    if redis_client is not None:
        ledger: Ledger = RedisLedger(redis_client, namespace, settings.ledger_max)
    else:
        ledger = FileLedger(base / Path(settings.ledger).expanduser())
    key = load_key(base / Path(settings.licence_key).expanduser() if settings.licence_key else None)
    gate = ConsentGate(
        settings,
        source,
        ledger,
        Licences(key, settings.issuer),
        guard,
        mapper=ArtistMapper(settings.artist_paths, resolver),
        registry=registry,
    )
    gate._own_client = own
    return gate
