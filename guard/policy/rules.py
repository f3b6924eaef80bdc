"""The rules file (rules/default.yaml) compiled for the request path.

:func:`load_rules` reads the file, validates it against the typed model
(guard/policy/model.py, the one definition of the format) and compiles the model into
:class:`Policy`: frozen rules with precomputed limits and a memoised plan per
combination of request facts. The request path reads only these structures.

A bad file fails here, at start-up or on ``guard check``, with one
``file:line:col: reason`` per problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from guard import config
from guard.canaries.settings import FINGERPRINT_RULE_ID as CANARY_FINGERPRINT_RULE
from guard.canaries.settings import RULE_ID as CANARY_RULE
from guard.canaries.settings import CanarySettings
from guard.consent.model import Price
from guard.consent.settings import ConsentSettings
from guard.errors import ConfigError, Problem
from guard.fingerprints.catalogue import FingerprintCatalogue, load_fingerprints
from guard.identity.catalogue import Catalogue, load_catalogue
from guard.pacing import PacingSettings, compile_pacing
from guard.policy import model
from guard.policy.extends import SHIPPED_CATALOGUE, SHIPPED_RULES, catalogue_path, load_extended, shipped_dir
from guard.policy.limits import Ban, BanLookup, Budget, DistinctLimit, RateLimit, distinct_limit
from guard.policy.model import ACTIONS, BUILTIN_CATEGORIES, parse_duration
from guard.policy.paths import PathGroups
from guard.privatetoken import TokenSettings, compile_tokens
from guard.sessions.settings import ChallengeSettings, CookieSettings, SessionSettings
from guard.yamlfile import Located, load_yaml

__all__ = [
    "ACTIONS",
    "BUILTIN_CATEGORIES",
    "Match",
    "Plan",
    "Policy",
    "RedisSettings",
    "Rule",
    "load_rules",
    "parse_duration",
]


@dataclass(frozen=True, slots=True)
class Match:
    """A rule's static conditions; empty sets match everything."""

    categories: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()
    user_agent: str | None = None  # "missing" | "present" | None
    sessions: frozenset[str] = frozenset()  # session states (guard.policy.model.SESSION_STATES)
    hosting: bool = False  # only clients in a hosting provider's ranges

    def matches(
        self,
        category: str,
        agent: str | None,
        group: str,
        ua_missing: bool,
        session: str = "none",
        hosting: bool = False,
    ) -> bool:
        """Whether a request with these facts meets every condition."""
        if self.categories and category not in self.categories:
            return False
        if self.agents and (agent is None or agent.lower() not in self.agents):
            return False
        if self.paths and group not in self.paths:
            return False
        if self.sessions and session not in self.sessions:
            return False
        if self.hosting and not hosting:
            return False
        return self.user_agent is None or (self.user_agent == "missing") == ua_missing


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``rules:``."""

    id: str
    match: Match
    action: str
    limit: RateLimit | DistinctLimit | Budget | None = None
    key: str | None = None
    ban: Ban | None = None
    reason: str | None = None
    description: str | None = None
    line: int | None = None
    shadow: bool = False  # decisions are logged and counted, never enforced

    @property
    def counts_tracks(self) -> bool:
        return isinstance(self.limit, DistinctLimit | Budget) and not isinstance(self.limit, BanLookup)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """The ``redis:`` section: where shared counters live and what to do when Redis is down."""

    url: str | None = None
    namespace: str = "guard"
    timeout: float = 0.05
    fail: str = "open"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the rules say for one combination of request facts (cached)."""

    terminal: Rule | None
    limits: tuple[Rule, ...]
    shadow_blocks: tuple[Rule, ...] = ()  # shadow-mode block rules that matched before the terminal


@dataclass
class Policy:
    """A validated rules file, compiled for the request path."""

    source: str
    catalogue: Catalogue
    paths: PathGroups
    exempt: frozenset[str]
    verify_categories: frozenset[str]
    rules: list[Rule]
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    client_ipv4_prefix: int = 32
    client_ipv6_prefix: int = 64
    forwarded_header: str = "x-forwarded-for"  # the one header trusted proxies write
    memory_max_entries: int = 200_000
    reverse_dns: bool = True
    pending: str = "verifying"
    pending_retry_after: float = 10.0
    signatures_file: str | None = None
    shadow: bool = False  # the whole policy in shadow mode: log and count, enforce nothing
    metrics_path: str | None = None
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    sample_allows: float = 0.0
    robots_txt: bool = True
    ai_txt: bool = True
    default_disallow: tuple[str, ...] = ()
    sitemap: str | None = None
    merge_robots: str | None = None  # "upstream" (the app's own /robots.txt) or a file path
    enforce_robots: bool = True
    content_usage: str | None = None  # IETF AI-preferences, e.g. "train-ai=n"
    x_robots_tag: str | None = None  # e.g. "noai, noimageai"
    tdmrep: bool = False
    tdm_policy: str | None = None
    redis: RedisSettings | None = None
    consent: ConsentSettings | None = None  # artists' opt-ins (guard/consent); None: no consent gate
    sessions: SessionSettings | None = None  # None: no sessions
    pacing: PacingSettings | None = None  # None: audio is not paced
    private_tokens: TokenSettings | None = None  # None: no Private Access Tokens
    canaries: CanarySettings | None = None  # None: no canaries (guard/canaries)
    fingerprint_header: bytes | None = None  # where the trusted proxy writes the JA4; None: not read
    fingerprints: FingerprintCatalogue = field(default_factory=FingerprintCatalogue)
    notes: tuple[str, ...] = ()  # what the loader filled in for the file (`guard check` says so)
    _plans: dict[tuple[str, str | None, str, bool, str, bool], Plan] = field(default_factory=dict, repr=False)

    def plan(
        self,
        category: str,
        agent: str | None,
        group: str,
        ua_missing: bool,
        session: str = "none",
        hosting: bool = False,
    ) -> Plan:
        """The terminal rule and the limits that apply, memoised per combination of facts.

        A ``challenge`` rule never applies to a proven session: it has answered one.
        """
        fact = (category, agent, group, ua_missing, session, hosting)
        plan = self._plans.get(fact)
        if plan is None:
            limits: list[Rule] = []
            shadows: list[Rule] = []
            terminal = None
            for rule in self.rules:
                if not rule.match.matches(category, agent, group, ua_missing, session, hosting):
                    continue
                if rule.action == "challenge" and session == "proven":
                    continue
                if rule.limit is not None:
                    limits.append(rule)
                elif rule.shadow:
                    if rule.action == "block":
                        shadows.append(rule)  # would block; evaluation goes on as if it were absent
                else:
                    terminal = rule
                    break
            plan = Plan(terminal, tuple(limits), tuple(shadows))
            if len(self._plans) < 65536:  # the fact space is small; the bound is a safety net
                self._plans[fact] = plan
        return plan

    @property
    def categories(self) -> dict[str, str]:
        """Every category a rule may name: the catalogue's and the built-in ones."""
        return {**self.catalogue.categories, **BUILTIN_CATEGORIES}


def ranges_dir(policy: Policy) -> Path:
    """Where the published IP ranges live: ``ranges/`` beside the rules file if there is one, else beside its catalogue.

    A catalogue and its agents' ranges travel together, so a rules file that names the
    shipped catalogue (or extends the shipped rules) from a folder of its own gets the
    shipped ranges wherever it lives.
    """
    own = Path(policy.source).parent / "ranges"
    return own if own.is_dir() else Path(policy.catalogue.source).parent / "ranges"


def load_rules(path: str | Path) -> Policy:
    """Load, validate and compile a rules file (and the catalogue it names, and the file it extends)."""
    doc = load_extended(path)
    return parse_rules(doc, Path(path).parent)


#: Fixes for problems a first rules file runs into, by the reason the model gives.
HINTS = {
    "'version' is required": "add 'version: 1' as the first line",
    "'rules' is required": "add 'rules:' (a list; [] for none), or 'extends: default' to start from the shipped rules",
    "paths: must not be empty": "name at least one group, or leave 'paths:' out for the shipped groups",
}


def parse_rules(doc: Located, base_dir: Path) -> Policy:
    """Validate parsed YAML into a :class:`Policy`; relative paths resolve from ``base_dir``.

    Every problem of the file is reported at once (one :class:`ConfigError` with a line
    per problem), except a file that is not a mapping or names another version: then
    nothing else can be read.
    """
    root = doc.data
    if not isinstance(root, dict):
        line, column = doc.locate([]) or (1, 1)
        raise ConfigError(doc.file, line, "a rules file is a mapping (version, paths, rules, ...)", column)
    version = root.get("version")
    if "version" in root and (version != 1 or isinstance(version, bool)):  # another version's keys differ
        line, column = doc.position(root, "version") or (1, 1)
        raise ConfigError(doc.file, line, "'version: 1' is required (the only version so far)", column)
    doc, notes = with_shipped_paths(doc)
    root = doc.data
    problems: list[Problem] = []
    catalogue = _load_catalogue(doc, root, base_dir, problems)
    # A catalogue that did not load: the rules' names are still checked, against the shipped one.
    names = catalogue or (load_catalogue(catalogue_path(SHIPPED_CATALOGUE, base_dir)) if problems else None)
    try:
        spec = config.validate(
            model.RulesFile,
            doc,
            {
                **model.rules_context(root),
                "categories": list(names.categories) if names else None,
                "agents": [a.name for a in names.agents] if names else None,
                "base_dir": base_dir,
            },
        )
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError.of([_with_hint(p) for p in problems])
    assert catalogue is not None  # a catalogue that fails to load is a problem reported above
    policy = compile_policy(spec, catalogue, doc, base_dir)
    policy.notes = notes
    return policy


def _with_hint(problem: Problem) -> Problem:
    hint = HINTS.get(problem.reason)
    return Problem(problem.file, problem.line, f"{problem.reason}: {hint}", problem.column) if hint else problem


def with_shipped_paths(doc: Located) -> tuple[Located, tuple[str, ...]]:
    """``doc`` with the shipped path groups (and ``exempt``) when it names none, and a note saying so."""
    root = doc.data
    if "paths" in root:
        return doc, ()
    shipped = load_yaml(shipped_dir() / SHIPPED_RULES["default"]).data
    added = {"paths": shipped["paths"]}
    if "exempt" not in root:
        added["exempt"] = shipped["exempt"]
    data = {**root, **added}
    here = doc.position(root) or (1, 1)
    filled = Located(doc.file, data)
    filled._marks.update(doc._marks)
    own, entries = doc._marks.get(id(root), (here, {}))
    filled._marks[id(data)] = (own, {**entries, **{key: (here, here) for key in added}})
    groups = ", ".join(shipped["paths"])
    return filled, (f"no paths: the shipped path groups apply ({groups})",)


def _load_catalogue(doc: Located, root: dict, base_dir: Path, problems: list[Problem]) -> Catalogue | None:
    """The catalogue the file names; None when it names none that loads (the reason goes to ``problems``)."""
    ref = root.get("catalogue")
    if ref is not None and not isinstance(ref, str):
        return None  # the model says what is wrong with it
    try:
        return load_catalogue(catalogue_path(ref, base_dir))
    except ConfigError as exc:
        if exc.line is not None:
            raise  # a problem inside the catalogue: its own file and line
        line, column = doc.position(root, "catalogue") or (1, 1)
        reason = f"catalogue '{ref or catalogue_path(ref, base_dir).name}': {exc.reason}"
        if ref != SHIPPED_CATALOGUE:
            reason += " (use 'catalogue: shipped' for the catalogue that comes with guard)"
        problems.append(Problem(doc.file, line, reason, column))
        return None


def compile_policy(spec: model.RulesFile, catalogue: Catalogue, doc: Located, base_dir: Path) -> Policy:
    """The request path's structures from a validated model."""
    if spec.apps:
        catalogue = catalogue.with_apps([(app.name, tuple(app.ua)) for app in spec.apps])
    directives = spec.directives
    merge = directives.merge_robots
    if merge is not None and merge != "upstream":
        merge = str(base_dir / merge)
    tdmrep = directives.tdmrep
    raw_rules = doc.data["rules"]
    canaries = _compile_canaries(spec.canaries) if spec.canaries is not None else None
    return Policy(
        source=doc.file,
        catalogue=catalogue,
        paths=PathGroups(dict(spec.paths)),
        exempt=frozenset(spec.exempt),
        verify_categories=frozenset(spec.verify),
        rules=[
            *(_compile_rule(rule, doc.line(raw_rules, i)) for i, rule in enumerate(spec.rules)),
            *_canary_rules(canaries, spec.fingerprints is not None),
        ],
        ipv4_prefix=spec.subnets.ipv4,
        ipv6_prefix=spec.subnets.ipv6,
        client_ipv4_prefix=spec.clients.ipv4,
        client_ipv6_prefix=spec.clients.ipv6,
        forwarded_header=spec.clients.forwarded,
        memory_max_entries=spec.memory.max_entries,
        reverse_dns=spec.reverse_dns.enabled,
        pending=spec.reverse_dns.pending,
        pending_retry_after=spec.reverse_dns.retry_after,
        signatures_file=str(base_dir / spec.signatures.directory) if spec.signatures.directory else None,
        shadow=spec.shadow,
        metrics_path=spec.metrics.path,
        metrics_allow=tuple(spec.metrics.allow),
        sample_allows=float(spec.log.sample_allows),
        robots_txt=directives.robots_txt,
        ai_txt=directives.ai_txt,
        default_disallow=tuple(directives.default_disallow),
        sitemap=directives.sitemap,
        merge_robots=merge,
        enforce_robots=directives.enforce_robots,
        content_usage=directives.content_usage,
        x_robots_tag=directives.x_robots_tag,
        tdmrep=tdmrep is not False,
        tdm_policy=tdmrep.policy if isinstance(tdmrep, model.TdmPolicy) else None,
        redis=RedisSettings(spec.redis.url, spec.redis.namespace, spec.redis.timeout, spec.redis.fail),
        consent=_compile_consent(spec.consent),
        sessions=_compile_sessions(spec.sessions, base_dir) if spec.sessions is not None else None,
        pacing=compile_pacing(spec.pacing) if spec.pacing is not None else None,
        private_tokens=compile_tokens(spec.private_tokens) if spec.private_tokens is not None else None,
        canaries=canaries,
        fingerprint_header=spec.fingerprints.header.encode() if spec.fingerprints is not None else None,
        fingerprints=_fingerprint_catalogue(spec.fingerprints, base_dir),
    )


def _fingerprint_catalogue(spec: model.Fingerprints | None, base_dir: Path) -> FingerprintCatalogue:
    if spec is None or spec.catalogue is None:
        return FingerprintCatalogue()
    folder = shipped_dir() if spec.catalogue == "shipped" else base_dir
    return load_fingerprints(folder / ("fingerprints.yaml" if spec.catalogue == "shipped" else spec.catalogue))


def _compile_canaries(spec: model.Canaries) -> CanarySettings:
    return CanarySettings(
        low=spec.range[0],
        high=spec.range[1],
        count=spec.count,
        registered=tuple(spec.ids),
        key_env=spec.key_env,
        links=tuple(spec.links),
        stream=spec.stream,
        sitemap=spec.sitemap,
        audio=frozenset(spec.audio),
        api=frozenset(spec.api),
        ban_for=spec.ban.for_,
        address_for=spec.ban.address_for,
        network_for=spec.ban.network_for,
    )


def _canary_rules(canaries: CanarySettings | None, fingerprints: bool) -> list[Rule]:
    """With canaries on, last rules whose checks only look up the bans a canary fetch starts:
    the session (else the browser) by its key, its address and network by its ban scope; and
    with fingerprints read, its rare fingerprint (a check only clients with one have)."""
    if canaries is None:
        return []
    reason = "this client fetched a track no listener can reach (a canary)"
    ban = Ban(1, 60.0, canaries.ban_for, "address")
    limit = BanLookup("track", 1, 60.0)
    rules = [Rule(CANARY_RULE, Match(), "block", limit, "session", ban, reason, "canary fetches ban their client")]
    if fingerprints:
        by_fingerprint = Ban(1, 60.0, canaries.ban_for)
        what = "canary fetches ban a rare fingerprint"
        rules.append(
            Rule(CANARY_FINGERPRINT_RULE, Match(), "block", limit, "fingerprint", by_fingerprint, reason, what)
        )
    return rules


def _compile_sessions(spec: model.Sessions, base_dir: Path) -> SessionSettings:
    def rate(limit: model.MintLimit) -> RateLimit:
        return RateLimit(limit.requests, limit.per, limit.burst if limit.burst is not None else limit.requests)

    cookie, challenge = spec.cookie, spec.challenge
    return SessionSettings(
        issue=frozenset(spec.issue),
        require=frozenset(spec.require),
        ttl=spec.ttl,
        grace=spec.grace,
        ipv4_prefix=spec.ipv4,
        ipv6_prefix=spec.ipv6,
        mint_per_address=rate(spec.mint_per_address),
        mint_per_subnet=rate(spec.mint_per_subnet),
        cookie=CookieSettings(cookie.name, cookie.http_only, cookie.secure, cookie.same_site, cookie.partitioned),
        challenge=ChallengeSettings(
            challenge.difficulty,
            challenge.ttl,
            challenge.wait if challenge.fallback else 0.0,
            challenge.proof_ttl,
            challenge.path or "/.guard/challenge",
        ),
        url_param=spec.url_param,
        how_to=spec.how_to,
        key_env=spec.key_env,
        key_file=str(base_dir / spec.key_file) if spec.key_file else None,
    )


def _compile_consent(spec: model.Consent | None) -> ConsentSettings | None:
    if spec is None:
        return None
    price = None if spec.price in (None, "none") else Price.parse(spec.price)
    fields = spec.model_dump(exclude={"price", "artist_paths", "usages"})
    return ConsentSettings(**fields, price=price, artist_paths=tuple(spec.artist_paths), usages=dict(spec.usages))


def _compile_rule(spec: model.Rule, line: int | None) -> Rule:
    match = Match(
        frozenset(spec.match.category),
        frozenset(a.lower() for a in spec.match.agent),
        frozenset(spec.match.path),
        spec.match.user_agent,
        frozenset(spec.match.session),
        spec.match.network == "hosting",
    )
    limit: RateLimit | DistinctLimit | Budget | None = None
    key = ban = None
    if spec.limit is not None:
        spec_limit, key = spec.limit, spec.limit.key
        if spec_limit.distinct is not None:
            assert spec_limit.max is not None  # the model requires it
            limit = distinct_limit(spec_limit.distinct, spec_limit.max, spec_limit.per)
        else:
            assert spec_limit.requests is not None  # the model requires it
            burst = spec_limit.burst if spec_limit.burst is not None else spec_limit.requests
            limit = RateLimit(spec_limit.requests, spec_limit.per, burst)
    if spec.ban is not None:
        ban = Ban(spec.ban.after, spec.ban.within, spec.ban.for_, spec.ban.scope)
    return Rule(
        id=spec.id,
        match=match,
        action=spec.action,
        limit=limit,
        key=key,
        ban=ban,
        reason=spec.reason,
        description=spec.description,
        line=line,
        shadow=spec.shadow,
    )
