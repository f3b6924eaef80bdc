"""The decision engine: request facts in, allow / block / throttle out.

Independent of ASGI so that the middleware, ``guard explain`` and the tests share it.
Per request: resolve the client, identify the agent, classify the path, look up the
rules' plan for those facts (memoised), then ask the store about the plan's limits in
one call. A client the store has banned is remembered locally until the ban ends, so
its further requests cost no store round trip.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from guard.identity.address import Client, ClientResolver
from guard.identity.identify import Identifier, Identity
from guard.identity.ranges import HostingRanges, RangeVerifier
from guard.identity.rdns import ReverseDNSVerifier
from guard.identity.signatures import ReplayMemory, SignatureCheck, SignatureVerifier
from guard.lru import LRU
from guard.policy.limits import (
    DEFAULT_SCOPE,
    SEEN_FOR_US,
    SESSION_TAG,
    BanLookup,
    Budget,
    Check,
    DistinctLimit,
    Escalation,
    RateLimit,
    Verdict,
    network_levels,
    prefix_key,
    to_us,
)
from guard.policy.paths import PathMatch, normalise_path
from guard.policy.rules import Match, Policy, Rule
from guard.policy.tracks import bounded
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import Session, network_tag
from guard.signals.robots_matcher import RobotsTxt
from guard.stores.base import Store
from guard.stores.memory import MemoryStore

Clock = Callable[[], float]

#: Clients whose prepared check keys are kept (least recently seen first out): a few kilobytes each.
PREPARED_CLIENTS = 8192
#: A track counted by an exact window of at least this long is not counted again by the same
#: client within a thirtieth of the window (see :func:`count_again_at`).
REPEAT_MIN_PER_US = 60 * 1_000_000
REPEAT_SHARE = 30
_TRACK = object()  # a prepared check counts the request's track (plain objects: the collector ignores them)
_HASHED_TRACK = object()  # ... its keyed hash (budgets)
_new = tuple.__new__  # a Check or Escalation from its fields, without the named constructor's call

#: One client's check for one rule, kept between its requests: its key, its ban scope's
#: fields (an Escalation's, or None), what it counts (None, :data:`_TRACK`,
#: :data:`_HASHED_TRACK` or a constant value), and the value it counted lately with until
#: when that is not counted again (see :func:`count_again_at`). Only text and numbers: the
#: garbage collector stops watching such tuples, and the dicts holding only them.
Prepared = tuple[str, "tuple[str, str, str, str, str, str, int] | None", "object | str | None", "str | None", int]


@dataclass(slots=True)
class Facts:
    """Everything the rules look at for one request. Treat as read-only (not frozen: cheaper to build)."""

    client: Client
    identity: Identity
    path: str
    where: PathMatch
    query: str = ""
    session: Session | None = None  # a valid session bound to this client, or None
    session_state: str = "none"  # what rules match: none, fresh, page or proven

    @property
    def plan_key(self) -> tuple[str, str | None, str, bool, str, bool]:
        i = self.identity
        agent = i.agent.name if i.agent else None
        return (i.category, agent, self.where.group, i.ua_missing, self.session_state, self.client.provider is not None)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request. ``rule`` is None when no rule decided (allowed)."""

    action: str  # "allow" | "block" | "throttle"
    rule: Rule | None = None
    reason: str = ""
    retry_after: float | None = None
    shadowed: tuple[tuple[Rule, str], ...] = ()  # (shadow rule, what it would have said)
    banned: bool = False  # the denial is a ban (its own, or one reaching it from its address or subnet)
    mint: bool = False  # a new session may be issued with the response

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def ban_scope(self) -> str | None:
        """What the ban that denied the request covers: client, address, subnet (key: that key alone)."""
        if not self.banned or self.rule is None or self.rule.ban is None:
            return None
        return ban_scope(self.rule) or "key"

    @property
    def rule_id(self) -> str | None:
        return self.rule.id if self.rule else None

    @property
    def retry_after_header(self) -> str | None:
        """Retry-After in whole seconds, rounded up (RFC 9110 section 10.2.3)."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after - 1e-9)))


ALLOW = Decision("allow")
MINT = Decision("allow", mint=True)
VERIFYING_RULE = Rule(
    id="reverse-dns-pending",
    match=Match(),
    action="throttle",
    description="a claimed crawler whose reverse DNS check is still running: come back shortly",
)
ROBOTS_RULE = Rule(
    id="robots-txt", match=Match(), action="block", description="a crawler fetching what its robots.txt group disallows"
)
SESSION_RULE = Rule(
    id="session-required", match=Match(), action="challenge", description="this path group requires a session"
)


class Guard:
    """Evaluates requests against a policy with a counter store."""

    def __init__(
        self,
        policy: Policy,
        store: Store | None = None,
        *,
        clock: Clock = time.time,
        trusted_proxies: Iterable[str] = (),
        verifier: RangeVerifier | None = None,
        namespace: str = "guard",
        rdns: ReverseDNSVerifier | None = None,
        signatures: SignatureVerifier | None = None,
        hosting: HostingRanges | None = None,
        sessions: SessionSettings | None = None,
        budget_key: bytes | None = None,
    ) -> None:
        """``sessions`` overrides the policy's ``sessions:`` section (None: the policy's).

        ``budget_key`` keys the hash of what hour and day budgets count (see
        :meth:`budget_item`); instances that share a store must share it. None: a key derived
        from ``namespace``, which anyone can compute.
        """
        self.store: Store = store if store is not None else MemoryStore(policy.memory_max_entries)
        self.clock = clock
        self.namespace = namespace
        self.trusted_proxies = tuple(trusted_proxies)
        self.verifier = verifier
        # Always there (it costs nothing until used); each policy says whether to use it.
        self.rdns = rdns if rdns is not None else ReverseDNSVerifier()
        self._signatures = signatures
        self._replays = ReplayMemory()  # nonces already used: they outlive a reload of the signer file
        self.robots: RobotsTxt | None = None  # set by whoever serves robots.txt (the middleware)
        self._bans: LRU[str, float] = LRU(65536)  # survives policy changes, like the store
        self.hosting = hosting
        self._budget_key = budget_key or hashlib.sha256(b"guard budgets:" + namespace.encode()).digest()
        self._sessions = sessions
        self.sessions: SessionSettings | None = None  # None: sessions are off
        # Addresses over their minting limit, until about when they may mint again: their
        # further attempts skip the mint checks, so they do not use up their subnet's budget.
        self._mint_paused: LRU[str, float] = LRU(65536)
        self._hashed: LRU[str, str] = LRU(65536)  # budget_item's hashes, per value
        self.use_policy(policy)

    def use_policy(
        self, policy: Policy, verifier: RangeVerifier | None = None, hosting: HostingRanges | None = None
    ) -> None:
        """Switch to ``policy`` (a reload): counters, bans and caches of the store carry over."""
        if verifier is not None:
            self.verifier = verifier
        if hosting is not None:
            self.hosting = hosting
        keys = [rule.key for rule in policy.rules if rule.limit is not None]
        resolver = ClientResolver(
            self.trusted_proxies,
            policy.ipv4_prefix,
            policy.ipv6_prefix,
            (policy.client_ipv4_prefix, policy.client_ipv6_prefix),
            policy.forwarded_header,
            levels=network_levels(keys),
            hosting=self.hosting,
            provider_tag="provider" in keys,
        )
        # Limits that only some clients have a key for (a network level of one IP family, a provider).
        self._conditional = any(key in ("provider", "fingerprint") or prefix_key(key) for key in keys if key)
        self._agent_keyed = "agent" in keys
        self._applicable: dict[int, tuple[tuple[Rule, ...], dict[tuple[int, bool, bool], tuple[Rule, ...]]]] = {}
        identifier = Identifier(
            policy.catalogue,
            policy.verify_categories,
            self.verifier,
            rdns=self.rdns if policy.reverse_dns else None,
            pending=policy.pending,
        )
        signatures = self._signatures
        if signatures is None and policy.signatures_file:
            signatures = SignatureVerifier.from_file(policy.signatures_file, replays=self._replays)
        # Everything is built first and assigned together: a request sees one policy or the other.
        self.policy, self.resolver, self.identifier, self.signatures = policy, resolver, identifier, signatures
        self.sessions = self._sessions or policy.sessions
        # Checks prepared per client (keys, bans, scopes): rebuilt for the new rules and resolver.
        self._prepared: LRU[tuple[str, str, str, str | None, str | None, int, str | None], dict[int, Prepared]] = LRU(
            PREPARED_CLIENTS
        )
        self._mint: LRU[str, tuple[Client, tuple[Check, Check]]] = LRU(PREPARED_CLIENTS)

    # -- facts ------------------------------------------------------------------------

    def facts(
        self,
        client: Client,
        user_agent: str | None,
        path: str,
        signed: SignatureCheck | None = None,
        query: str = "",
        session: Session | None = None,
    ) -> Facts:
        """Identify and classify a request; ``signed`` is its Web Bot Auth check, if it carried one."""
        normal = normalise_path(path)
        identity = self.identifier.identify(user_agent, client)
        if signed is not None and signed.agent is not None:
            agent = self.policy.catalogue.by_name(signed.agent)
            if agent is not None:
                ua_hash = identity.ua_hash
                if signed.ok:
                    identity = Identity(
                        agent.category, agent, None, ua_hash=ua_hash, verified=True, evidence="web bot auth"
                    )
                else:
                    evidence = f"web bot auth: {signed.reason}"
                    identity = Identity("spoofed", agent, None, ua_hash=ua_hash, verified=False, evidence=evidence)
        state = session.level(self.clock()) if session is not None else "none"
        return Facts(client, identity, normal, self.policy.paths.classify(normal), query, session, state)

    def is_exempt(self, group: str) -> bool:
        return group in self.policy.exempt

    # -- decisions --------------------------------------------------------------------

    async def decide(self, facts: Facts) -> Decision:
        """The decision for a request, counting it where the rules say so."""
        if facts.identity.category == "verifying":
            # A real crawler retries and is verified by then; a spoofer gets nothing meanwhile.
            reason = VERIFYING_RULE.description or ""
            return Decision("throttle", VERIFYING_RULE, reason, self.policy.pending_retry_after)
        key = facts.plan_key
        plan = self.policy._plans.get(key) or self.policy.plan(*key)  # memoised: a dict lookup
        shadowed = tuple((rule, block_reason(rule)) for rule in plan.shadow_blocks) if plan.shadow_blocks else ()
        terminal = plan.terminal
        if terminal is not None and terminal.action in ("block", "challenge"):
            return Decision(terminal.action, terminal, block_reason(terminal), shadowed=shadowed)
        agent = facts.identity.agent
        if agent is not None and agent.robots_tokens and self.robots is not None:
            # A crawler is held to its own robots.txt group, whatever the rules allow.
            target = facts.path + ("?" + facts.query if facts.query else "")
            allowed, rule = self.robots.check(agent.robots_tokens, target)
            if not allowed and rule is not None:
                reason = f"robots.txt disallows this for {agent.name} ({rule.line})"
                return Decision("block", ROBOTS_RULE, reason, shadowed=shadowed)
        limits = self.limits_for(plan.limits, facts.client)
        sessions = self.sessions
        mint = False
        if sessions is not None and facts.session is None and terminal is None:
            group = facts.where.group
            if group in sessions.require:
                return Decision("challenge", SESSION_RULE, "a session is required", shadowed=shadowed)
            mint = group in sessions.issue and not self._mint_paused_for(facts.client.key)
        if not limits and not mint:
            return Decision("allow", shadowed=shadowed) if shadowed else ALLOW
        now = self.clock()
        now_us = to_us(now)
        checks, rules, counting, prepared = self._checks(facts, limits, now_us)
        if mint:
            checks += self.mint_checks(facts.client)
        elif not checks:
            return Decision("allow", shadowed=shadowed) if shadowed else ALLOW  # nothing to count or look up
        if len(self._bans):  # a ban this process already knows of costs no store call
            for i, check in enumerate(checks):
                if check.ban is not None:
                    until = self._bans.get(check.ban_key)
                    if until is not None:
                        if until > now:  # in whole microseconds, as the stores count: the same Retry-After
                            left = (to_us(until) - to_us(now)) / 1e6
                            return self._denied(rules[i], Verdict(i, left, until), shadowed)
                        self._bans.pop(check.ban_key)
        verdict = await self.store.apply(now, checks)
        n = len(rules)
        if verdict.shadowed:
            shadowed += tuple((rules[i], f"limit exceeded: {limit_text(rules[i])}") for i in verdict.shadowed if i < n)
        if verdict.denied is None:
            if counting:
                remember_counted(prepared, rules, counting, verdict.shadowed, now_us)
            minted = mint and not any(i >= n for i in verdict.shadowed)  # over a minting limit: no new session
            if mint and n in verdict.shadowed:  # this address is over its minting limit
                self._pause_minting(facts.client.key, now)
            if shadowed:
                return Decision("allow", shadowed=shadowed, mint=minted)
            return MINT if minted else ALLOW
        if verdict.banned_until is not None:
            self._bans.put(checks[verdict.denied].ban_key, verdict.banned_until)
        return self._denied(rules[verdict.denied], verdict, shadowed)

    def limits_for(self, limits: tuple[Rule, ...], client: Client) -> tuple[Rule, ...]:
        """``limits`` without those the client has no key for (``v6/48`` for an IPv4 client, ...)."""
        if not self._conditional or not limits:
            return limits
        cached = self._applicable.get(id(limits))
        if cached is None or cached[0] is not limits:
            cached = (limits, {})
            if len(self._applicable) < 4096:
                self._applicable[id(limits)] = cached
        fact = (client.version, client.provider is not None, client.fingerprint is not None)
        kept = cached[1].get(fact)
        if kept is None:
            kept = cached[1][fact] = tuple(rule for rule in limits if _who(rule.key or "", client))
        return kept

    def checks(self, facts: Facts, limits: tuple[Rule, ...]) -> list[Check]:
        """The store checks for ``limits``; all of a request's keys share one hash tag, its widest network.

        What a check holds apart from the request's track (its key, limit, ban and ban
        scope) depends on the client alone: it is built once per client and rule and kept
        (see :data:`PREPARED_CLIENTS`); a request only adds its track, hashed once for all
        its budgets.
        """
        return self._checks(facts, limits, None)[0]

    def _checks(
        self, facts: Facts, limits: tuple[Rule, ...], now_us: int | None
    ) -> tuple[list[Check], Sequence[Rule], list[tuple[int, int, str]], dict[int, Prepared]]:
        """:meth:`checks`, and with ``now_us``: a value this client's allowed requests counted
        lately (see :func:`count_again_at`) is not counted again: its check keeps only its
        ban, and a check left with nothing to count or look up (no value, no ban, not a rate)
        is left out. Also returns the rule of each check, what the checks count (index, rule
        id, value), and the client's prepared checks, for :func:`remember_counted`.
        """
        client = facts.client
        ua = facts.identity.ua_hash
        session = getattr(facts, "session", None)  # a signed session, when the request carries one
        # A session issued within the day an address remembers its devices counts as seen from
        # then on (its minting request was recorded under its User-Agent); whole seconds: round up.
        clock_us = now_us if now_us is not None else to_us(self.clock())
        fresh = session is not None and to_us(session.issued_at) > clock_us - SEEN_FOR_US
        since = to_us(session.issued_at + 1) if fresh and session is not None else 0
        # Who a limit keyed `agent` counts (a name, else the User-Agent's hash), when the rules have one.
        agent = facts.identity.agent_key if self._agent_keyed else None
        who = (
            client.ip,
            client.via,
            ua,
            agent,
            session.id if session is not None else None,
            since,
            client.fingerprint,
        )
        prepared = self._prepared.get(who)
        if prepared is None:
            prepared = {}
            self._prepared.put(who, prepared)
        track = facts.where.track  # canonical and bounded (guard.policy.tracks)
        if track is None and self.sessions is not None and facts.where.group in self.sessions.require:
            # Audio under a prefix that names no {track} (/audio/...): each file is its own track,
            # or a scraper walking the files would never meet a track limit or budget.
            track = bounded("path:" + facts.path)
        hashed = None
        checks: list[Check] = []
        rules: list[Rule] = []
        counting: list[tuple[int, int, str]] = []
        for rule in limits:
            found = prepared.get(id(rule))
            if found is None:
                found = prepared[id(rule)] = self._prepare(rule, client, ua, session, since, agent)
            key, scope, counts, counted, again_at = found
            item: str | None = None
            if track is not None and counts is not None:
                if counts is _TRACK:
                    value = track
                elif counts is _HASHED_TRACK:
                    if hashed is None:
                        hashed = self.budget_item(track)
                    value = hashed
                else:
                    value = counts  # type: ignore[assignment]  # the session (of a network) or User-Agent
                # Counted lately: only its ban is looked at (item None).
                if now_us is None or value != counted or again_at <= now_us:
                    item = value
                    counting.append((len(checks), id(rule), value))
            shadow = rule.shadow
            ban = None if shadow else rule.ban
            if item is None and ban is None and now_us is not None and not isinstance(rule.limit, RateLimit):
                continue  # nothing to count, no ban to look up
            escalation = _new(Escalation, scope) if scope is not None else None
            checks.append(_new(Check, (key, rule.limit, item, ban, shadow, escalation)))
            rules.append(rule)
        if now_us is not None and checks and type(checks[0].limit) is BanLookup and not self._known_ban(checks):
            # Only the canary rules' ban lookups are left (a repeat): they ride along with a
            # request's other checks, never cost a store call of their own.
            return [], [], counting, prepared
        return checks, rules, counting, prepared

    def _known_ban(self, checks: list[Check]) -> bool:
        """Whether this process knows a ban on one of ``checks`` (see :meth:`decide`)."""
        return bool(len(self._bans)) and any(self._bans.peek(c.ban_key) is not None for c in checks)

    def _prepare(
        self, rule: Rule, client: Client, ua: str, session: Session | None, since: int, agent: str | None = None
    ) -> Prepared:
        """``rule``'s check for this client (key, limit, ban and ban scope), and what it counts
        on a path with a track: the track (:data:`_TRACK`), its hash (:data:`_HASHED_TRACK`),
        the session or User-Agent (text), or None. ``agent``: who a limit keyed ``agent`` counts."""
        assert rule.limit is not None and rule.key is not None  # the parser gives every limit rule both
        prefix = f"{self.namespace}:{{{client.tag}}}:"
        # A session's, a rare fingerprint's and an agent's own counters follow them from network
        # to network: under their own hash tag (on a Redis Cluster, where one call must stay in
        # one slot, under the client's). Every other key stays the client's, so a new agent name
        # never starts the address's or network's counts afresh.
        home = (self._session_prefix(session) if rule.key == "session" and session is not None else "") or prefix
        if rule.key == "fingerprint" and client.fingerprint:  # one count across every address
            home = self._own_prefix("f" + client.fingerprint) or prefix
        if rule.key == "agent" and agent is not None:  # one count across the platform
            home = self._own_prefix("a" + agent) or prefix
        # Clients a proxy forwarded without a usable address share one strict bucket: no key per UA.
        ip_ua = client.key if client.via else f"{client.key}#{ua}"
        if rule.key == "ip":
            who = client.key
        elif rule.key == "ip_ua":
            who = ip_ua
        elif rule.key == "subnet":
            who = client.subnet
        elif rule.key == "session":
            who = f"s:{session.id}" if session is not None else ip_ua
        elif rule.key == "agent" and agent is not None:
            who = "agent:" + agent
        else:  # limits_for kept only rules the client has a key for
            who = _who(rule.key, client) or rule.key
        ban = None if rule.shadow else rule.ban  # a shadow rule never escalates
        session_key = f"s:{session.id}" if session is not None else ip_ua
        # What a held address remembers as a device seen there: its session, else its User-Agent.
        device = session_key if session is not None else ua
        escalation = self._escalation(rule, client, prefix, device, since) if ban is not None else None
        counts: Any = None
        if rule.counts_tracks:
            budget = isinstance(rule.limit, Budget)
            counted_kind = rule.limit.counts  # type: ignore[union-attr]
            if counted_kind != "track":
                # distinct sessions (of a network), User-Agents or networks (of a session), that fetch tracks
                counted = {"session": session_key, "network": self.network_of(client)}.get(counted_kind, ua)
                counts = self.budget_item(counted) if budget else counted
            else:
                counts = _HASHED_TRACK if budget else _TRACK
        scope = tuple(escalation) if escalation is not None else None
        return f"{home}{rule.id}:{who}", scope, counts, None, 0  # type: ignore[return-value]

    def _session_prefix(self, session: Session) -> str:
        """The key prefix of a session's own counters: its hash tag, whatever network it is on."""
        return self._own_prefix(session.id)

    def _own_prefix(self, name: str) -> str:
        """The key prefix of counters that follow ``name`` (a session, a fingerprint) from network
        to network: a hash tag of their own ("" on a Redis Cluster: the client's, see _prepare)."""
        if getattr(self.store, "cluster", False):
            return ""
        digest = hashlib.blake2s(name.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()
        return f"{self.namespace}:{{{SESSION_TAG}{digest}}}:"

    def network_of(self, client: Client) -> str:
        """The network ``distinct: network`` counts: the /24 or /48 sessions bind to (the subnet without sessions)."""
        s = self.sessions
        if s is None:
            return client.subnet
        family, tag = network_tag(client.version, client.number, s.ipv4_prefix, s.ipv6_prefix)
        return f"{family}:{tag}"

    def budget_item(self, value: str) -> str:
        """What a budget adds to its HyperLogLog for ``value``: a keyed hash of it (cached).

        The sketches' own hash is public (Redis's MurmurHash64A and seed): counting raw
        track ids would let a scraper pick, offline, tracks that fall into a few registers
        and are counted as a handful whatever their number. Under a secret key nobody can.
        """
        hashed = self._hashed.peek(value)
        if hashed is None:
            hashed = hashlib.blake2b(value.encode("utf-8"), key=self._budget_key[:64], digest_size=8).hexdigest()
            self._hashed.put(value, hashed)
        return hashed

    @staticmethod
    def _escalation(rule: Rule, client: Client, prefix: str, device: str, since: int) -> Escalation | None:
        """Where the rule's ban reaches beyond its key: the client's address and subnet (docs/bans.md)."""
        scope = ban_scope(rule)
        if scope is None or client.via:  # the shared bucket of unidentifiable clients is one key
            return None
        seen = f"{prefix}seen:{client.key}" if scope == "client" else ""
        address, subnet = f"{prefix}{rule.id}:{client.key}", f"{prefix}{rule.id}:{client.subnet}"
        return Escalation(scope, address, subnet, seen, device if seen else "", f"{prefix}scoped", since if seen else 0)

    def mint_checks(self, client: Client) -> list[Check]:
        """Shadow checks that limit new sessions per address and per subnet (exceeded: no session)."""
        assert self.sessions is not None
        found = self._mint.peek(client.ip)
        if found is None or found[0] is not client:
            prefix = f"{self.namespace}:{{{client.tag}}}:mint:"
            found = (
                client,
                (
                    Check(f"{prefix}ip:{client.key}", self.sessions.mint_per_address, shadow=True),
                    Check(f"{prefix}subnet:{client.subnet}", self.sessions.mint_per_subnet, shadow=True),
                ),
            )
            self._mint.put(client.ip, found)
        return list(found[1])

    def _pause_minting(self, key: str, now: float) -> None:
        assert self.sessions is not None
        limit = self.sessions.mint_per_address
        self._mint_paused.put(key, now + limit.per / limit.requests)  # about when one more is allowed

    def _mint_paused_for(self, key: str) -> bool:
        until = self._mint_paused.peek(key)
        if until is None:
            return False
        if until > self.clock():
            return True
        self._mint_paused.pop(key)
        return False

    def once_check(self, client: Client, nonce: str, ttl: float) -> Check:
        """A check that passes once per ``nonce`` within ``ttl`` seconds (a challenge answer)."""
        return Check(f"{self.namespace}:{{{client.tag}}}:once:{nonce}", RateLimit(1, ttl, 1))

    def _denied(self, rule: Rule, verdict: Verdict, shadowed: tuple = ()) -> Decision:
        if verdict.banned_until is not None:
            reason = f"banned after repeatedly exceeding: {limit_text(rule)}"
            return Decision("block", rule, reason, verdict.retry_after, shadowed, banned=True)
        return Decision(rule.action, rule, f"limit exceeded: {limit_text(rule)}", verdict.retry_after, shadowed)


def count_again_at(limit: Any, now_us: int) -> int:
    """Until when a value a client just counted is not counted again for it (0: it is, every time).

    A value counted again soon after adds nothing, so:

    * a budget: until its current slice ends. Exact: the value is in the slice already, so
      counting it again changes no register and cannot take the estimate past the maximum
      (every value was admitted with the estimate at or under it, and the window only loses
      slices).
    * an exact window of a minute or more: for a thirtieth of the window. A bounded lag: a
      value seen again in that time keeps its earlier last sight, so it leaves the window up
      to that much sooner (2 s of a minute).
    * anything else (a rate, a shorter window): every time.

    Meanwhile its check keeps only its ban (both stores look bans up for checks counting nothing).
    """
    if type(limit) is Budget:
        return (now_us // limit.slice_us + 1) * limit.slice_us
    if type(limit) is DistinctLimit and limit.per_us >= REPEAT_MIN_PER_US:
        return now_us + limit.per_us // REPEAT_SHARE
    return 0


def remember_counted(
    prepared: dict[int, Prepared],
    rules: Sequence[Rule],
    counting: list[tuple[int, int, str]],
    shadowed: tuple[int, ...],
    now_us: int,
) -> None:
    """Note what an allowed request counted (a shadow check that would have denied counted nothing).

    Each value is this request's own: other requests of the client may have run meanwhile.
    """
    for i, rule_id, item in counting:
        found = prepared.get(rule_id)
        if found is None or (shadowed and i in shadowed):
            continue
        again_at = count_again_at(rules[i].limit, now_us)
        if again_at:
            prepared[rule_id] = (found[0], found[1], found[2], item, again_at)


def _who(key: str, client: Client) -> str | None:
    """The counter key for a provider or network-level key (None: the client has none); others as is."""
    if key == "provider":
        return f"hosting:{client.provider}" if client.provider else None
    if key == "fingerprint":
        return f"ja4:{client.fingerprint}" if client.fingerprint else None
    level = prefix_key(key)
    if level is not None:
        return client.network(level[1]) if client.version == level[0] else None
    return key  # ip, ip_ua, subnet: every client has them


def ban_scope(rule: Rule) -> str | None:
    """What a rule's ban covers beyond its key: the rules' ``ban.scope``, else the scope of the
    limit's key (None: a provider or network-level key, whose ban covers that key alone)."""
    assert rule.ban is not None and rule.key is not None
    scope = rule.ban.scope or DEFAULT_SCOPE.get(rule.key)
    return "address" if scope == "client" and rule.key not in ("ip_ua", "session") else scope


def block_reason(rule: Rule) -> str:
    """The reason a blocking rule gives in its 403 body."""
    return rule.reason or rule.description or "blocked by policy"


def limit_text(rule: Rule) -> str:
    """A limit in words, e.g. ``40 distinct tracks per 1m per ip_ua``."""
    limit = rule.limit
    if isinstance(limit, RateLimit):
        return f"{limit.requests} requests per {_duration(limit.per)} per {rule.key}"
    assert isinstance(limit, DistinctLimit | Budget)
    return f"{limit.max} distinct {limit.counts}s per {_duration(limit.per)} per {rule.key}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
