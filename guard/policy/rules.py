"""The rules file (rules/default.yaml): parsing, validation and the compiled policy.

A bad file fails here, at start-up or on ``guard check``, with ``file:line: reason``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.errors import ConfigError
from guard.identity.catalogue import Catalogue, load_catalogue
from guard.policy.limits import KEY_KINDS, Ban, Budget, DistinctLimit, RateLimit, distinct_limit, is_key_kind
from guard.policy.paths import OTHER, PathGroups, pattern_problem
from guard.yamlfile import Located, load_yaml

ACTIONS = ("allow", "block", "throttle")
#: Categories that exist beside the catalogue's own.
BUILTIN_CATEGORIES = {
    "unknown": "Not in the catalogue: an ordinary browser, or a tool that hides.",
    "spoofed": "Claims to be a verifiable crawler but failed verification.",
}
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True, slots=True)
class Match:
    """A rule's static conditions; empty sets match everything."""

    categories: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()
    user_agent: str | None = None  # "missing" | "present" | None

    def matches(self, category: str, agent: str | None, group: str, ua_missing: bool) -> bool:
        """Whether a request with these facts meets every condition."""
        if self.categories and category not in self.categories:
            return False
        if self.agents and (agent is None or agent.lower() not in self.agents):
            return False
        if self.paths and group not in self.paths:
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
        return isinstance(self.limit, DistinctLimit | Budget)


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
    pending: str = "unknown"
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
    _plans: dict[tuple[str, str | None, str, bool], Plan] = field(default_factory=dict, repr=False)

    def plan(self, category: str, agent: str | None, group: str, ua_missing: bool) -> Plan:
        """The terminal rule and the limits that apply, memoised per combination of facts."""
        fact = (category, agent, group, ua_missing)
        plan = self._plans.get(fact)
        if plan is None:
            limits: list[Rule] = []
            shadows: list[Rule] = []
            terminal = None
            for rule in self.rules:
                if not rule.match.matches(category, agent, group, ua_missing):
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


def load_rules(path: str | Path) -> Policy:
    """Load, validate and compile a rules file (and the catalogue it names)."""
    doc = load_yaml(path)
    return parse_rules(doc, Path(path).parent)


def parse_duration(value: Any) -> float | None:
    """Seconds from ``30``, ``"30s"``, ``"10m"``, ``"1h"``, ``"1d"``, ``"250ms"``; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
            return seconds if seconds > 0 else None
    return None


_TOP_KEYS = {
    "version",
    "catalogue",
    "paths",
    "exempt",
    "reverse_dns",
    "signatures",
    "shadow",
    "metrics",
    "log",
    "verify",
    "clients",
    "subnets",
    "memory",
    "redis",
    "directives",
    "rules",
}


def parse_rules(doc: Located, base_dir: Path) -> Policy:
    """Validate parsed YAML into a :class:`Policy`; relative paths resolve from ``base_dir``."""
    root = doc.data
    if not isinstance(root, dict):
        raise doc.error(root, None, "a rules file is a mapping (version, paths, rules, ...)")
    _no_unknown_keys(doc, root, _TOP_KEYS, "top-level key")
    if root.get("version") != 1:
        raise doc.error(root, "version", "'version: 1' is required (the only version so far)")

    catalogue_ref = root.get("catalogue", "agents.yaml")
    if not isinstance(catalogue_ref, str):
        raise doc.error(root, "catalogue", "'catalogue' is the path of the crawler catalogue")
    try:
        catalogue = load_catalogue(base_dir / catalogue_ref)
    except ConfigError as exc:
        if exc.line is None:
            raise doc.error(root, "catalogue", f"catalogue {catalogue_ref!r}: {exc.reason}") from None
        raise

    paths = _parse_paths(doc, root)
    groups = set(paths.groups) | {OTHER}
    exempt = frozenset(_names(doc, root, "exempt", groups, "path group"))
    categories = {**catalogue.categories, **BUILTIN_CATEGORIES}
    verify = frozenset(_names(doc, root, "verify", set(catalogue.categories), "category"))

    rdns = root.get("reverse_dns", {})
    _mapping(doc, root, "reverse_dns", rdns, {"enabled", "pending"})
    if not isinstance(rdns.get("enabled", True), bool):
        raise doc.error(rdns, "enabled", "'enabled' is true or false")
    pending = rdns.get("pending", "unknown")
    if pending not in ("unknown", "spoofed"):
        raise doc.error(rdns, "pending", "'pending' is unknown (count like any visitor) or spoofed (block)")

    signatures = root.get("signatures", {})
    _mapping(doc, root, "signatures", signatures, {"directory"})
    signatures_file = signatures.get("directory")
    if signatures_file is not None:
        if not isinstance(signatures_file, str) or not (base_dir / signatures_file).is_file():
            raise doc.error(signatures, "directory", f"signer directory {signatures_file!r} is not a file")
        signatures_file = str(base_dir / signatures_file)

    subnets = root.get("subnets", {})
    _mapping(doc, root, "subnets", subnets, {"ipv4", "ipv6"})
    ipv4 = _int(doc, subnets, "ipv4", 24, 1, 32)
    ipv6 = _int(doc, subnets, "ipv6", 64, 1, 128)
    clients = root.get("clients", {})
    _mapping(doc, root, "clients", clients, {"ipv4", "ipv6"})
    client_v4 = _int(doc, clients, "ipv4", 32, ipv4, 32)
    client_v6 = _int(doc, clients, "ipv6", 64, ipv6, 128)
    memory = root.get("memory", {})
    _mapping(doc, root, "memory", memory, {"max_entries"})
    max_entries = _int(doc, memory, "max_entries", 200_000, 1, 10**9)

    directives = root.get("directives", {})
    _mapping(
        doc,
        root,
        "directives",
        directives,
        {
            "robots_txt",
            "ai_txt",
            "default_disallow",
            "sitemap",
            "merge_robots",
            "enforce_robots",
            "content_usage",
            "x_robots_tag",
            "tdmrep",
        },
    )
    for flag in ("robots_txt", "ai_txt", "enforce_robots"):
        if not isinstance(directives.get(flag, True), bool):
            raise doc.error(directives, flag, f"'{flag}' is true or false")
    for text in ("content_usage", "x_robots_tag"):
        value = directives.get(text)
        if value is not None and (not isinstance(value, str) or "\n" in value or "\r" in value):
            raise doc.error(directives, text, f"'{text}' is a one-line header value, or null to switch it off")
    merge = directives.get("merge_robots")
    if merge is not None:
        if not isinstance(merge, str):
            raise doc.error(directives, "merge_robots", "'merge_robots' is 'upstream' or a robots.txt file path")
        if merge != "upstream":
            if not (base_dir / merge).is_file():
                raise doc.error(directives, "merge_robots", f"robots.txt to merge {merge!r} is not a file")
            merge = str(base_dir / merge)
    tdmrep = directives.get("tdmrep", False)
    if not isinstance(tdmrep, bool) and not (isinstance(tdmrep, dict) and set(tdmrep) <= {"policy"}):
        raise doc.error(directives, "tdmrep", "'tdmrep' is true, false, or {policy: URL of the TDM policy}")
    sitemap = directives.get("sitemap")
    if sitemap is not None and not isinstance(sitemap, str):
        raise doc.error(directives, "sitemap", "'sitemap' is an absolute URL")
    default_disallow = tuple(_names(doc, directives, "default_disallow", set(paths.groups), "path group"))

    redis = _parse_redis(doc, root)
    metrics = root.get("metrics", {})
    _mapping(doc, root, "metrics", metrics, {"path", "allow"})
    metrics_path = metrics.get("path")
    if metrics_path is not None and (not isinstance(metrics_path, str) or not metrics_path.startswith("/")):
        raise doc.error(metrics, "path", "'path' is where /metrics is served, e.g. /metrics")
    metrics_allow = metrics.get("allow", ["127.0.0.1/32", "::1/128"])
    if not isinstance(metrics_allow, list):
        raise doc.error(metrics, "allow", "'allow' is a list of CIDRs that may read the metrics")
    for j, cidr in enumerate(metrics_allow):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError):
            raise doc.error(metrics_allow, j, f"{cidr!r} is not an address or CIDR") from None
    log_section = root.get("log", {})
    _mapping(doc, root, "log", log_section, {"sample_allows"})
    sample = log_section.get("sample_allows", 0.0)
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
        raise doc.error(log_section, "sample_allows", "'sample_allows' is a share of allowed requests, 0 to 1")
    if not isinstance(root.get("shadow", False), bool):
        raise doc.error(root, "shadow", "'shadow' is true or false")

    raw_rules = root.get("rules")
    if not isinstance(raw_rules, list):
        raise doc.error(root, "rules", "'rules' must be a list")
    rules: list[Rule] = []
    seen: dict[str, int | None] = {}
    agent_names = {a.name.lower() for a in catalogue.agents}
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(doc, raw_rules, i, raw, categories, groups, agent_names)
        if rule.id in seen:
            raise doc.error(raw, "id", f"duplicate rule id {rule.id!r} (first on line {seen[rule.id]})")
        seen[rule.id] = rule.line
        rules.append(rule)

    return Policy(
        source=doc.file,
        catalogue=catalogue,
        paths=paths,
        exempt=exempt,
        verify_categories=verify,
        rules=rules,
        ipv4_prefix=ipv4,
        ipv6_prefix=ipv6,
        client_ipv4_prefix=client_v4,
        client_ipv6_prefix=client_v6,
        memory_max_entries=max_entries,
        reverse_dns=rdns.get("enabled", True),
        pending=pending,
        signatures_file=signatures_file,
        shadow=root.get("shadow", False),
        metrics_path=metrics_path,
        metrics_allow=tuple(metrics_allow),
        sample_allows=float(sample),
        robots_txt=directives.get("robots_txt", True),
        ai_txt=directives.get("ai_txt", True),
        default_disallow=default_disallow,
        sitemap=sitemap,
        merge_robots=merge,
        enforce_robots=directives.get("enforce_robots", True),
        content_usage=directives.get("content_usage"),
        x_robots_tag=directives.get("x_robots_tag"),
        tdmrep=tdmrep is not False,
        tdm_policy=tdmrep.get("policy") if isinstance(tdmrep, dict) else None,
        redis=redis,
    )


# -- pieces -------------------------------------------------------------------------------


def _parse_redis(doc: Located, root: dict) -> RedisSettings:
    spec = root.get("redis", {})
    _mapping(doc, root, "redis", spec, {"url", "namespace", "timeout", "fail"})
    url = spec.get("url")
    if url is not None and (not isinstance(url, str) or "://" not in url):
        raise doc.error(spec, "url", "'url' is redis://host:port/db or redis+cluster://host:port")
    namespace = spec.get("namespace", "guard")
    if not isinstance(namespace, str) or not _RULE_ID.match(namespace):
        raise doc.error(spec, "namespace", "'namespace' is a key prefix: lower-case letters, digits, - _ .")
    timeout = parse_duration(spec.get("timeout", "50ms"))
    if timeout is None:
        raise doc.error(spec, "timeout", "'timeout' is a positive duration such as 50ms")
    fail = spec.get("fail", "open")
    if fail not in ("open", "closed"):
        raise doc.error(spec, "fail", "'fail' is open (count locally while Redis is down) or closed (throttle)")
    return RedisSettings(url, namespace, timeout, fail)


def _parse_paths(doc: Located, root: dict) -> PathGroups:
    raw = root.get("paths")
    if not isinstance(raw, dict) or not raw:
        raise doc.error(root, "paths", "'paths' must map group names to lists of path patterns")
    groups: dict[str, list[str]] = {}
    for name, patterns in raw.items():
        if not isinstance(name, str) or not _RULE_ID.match(name) or name == OTHER:
            raise doc.error(raw, name, f"bad path group name {name!r} (lower-case letters, digits, - _ .; not 'other')")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not patterns:
            raise doc.error(raw, name, f"path group {name!r} needs a list of patterns")
        for j, pattern in enumerate(patterns):
            problem = (
                pattern_problem(pattern)
                if isinstance(pattern, str)
                else f"path pattern {pattern!r} must start with '/'"
            )
            if problem is not None:
                raise doc.error(patterns, j, problem)
        groups[name] = patterns
    return PathGroups(groups)


_RULE_KEYS = {"id", "description", "match", "action", "limit", "ban", "reason", "shadow"}
_MATCH_KEYS = {"category", "agent", "path", "user_agent"}


def _parse_rule(
    doc: Located,
    parent: list,
    i: int,
    raw: Any,
    categories: dict[str, str],
    groups: set[str],
    agent_names: set[str],
) -> Rule:
    if not isinstance(raw, dict):
        raise doc.error(parent, i, "each rule is a mapping with at least 'id' and 'action'")
    _no_unknown_keys(doc, raw, _RULE_KEYS, "rule field")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise doc.error(raw, "id", "rule 'id' is required: lower-case letters, digits, - _ .")
    where = f"rule {rule_id!r}"

    raw_match = raw.get("match", {})
    _mapping(doc, raw, "match", raw_match, _MATCH_KEYS)
    cats = _names(doc, raw_match, "category", set(categories), "category")
    paths = _names(doc, raw_match, "path", groups, "path group")
    agents = [a.lower() for a in _names(doc, raw_match, "agent", None, "agent")]
    for agent in agents:
        if agent not in agent_names:
            raise doc.error(raw_match, "agent", f"{where}: unknown agent {agent!r} (not in the catalogue)")
    user_agent = raw_match.get("user_agent")
    if user_agent not in (None, "missing", "present"):
        raise doc.error(raw_match, "user_agent", f"{where}: 'user_agent' is 'missing' or 'present'")
    match = Match(frozenset(cats), frozenset(agents), frozenset(paths), user_agent)

    action = raw.get("action")
    if action not in ACTIONS:
        raise doc.error(raw, "action", f"{where}: 'action' must be one of {', '.join(ACTIONS)}")
    for text_key in ("reason", "description"):
        if text_key in raw and not isinstance(raw[text_key], str):
            raise doc.error(raw, text_key, f"{where}: '{text_key}' is text")
    if not isinstance(raw.get("shadow", False), bool):
        raise doc.error(raw, "shadow", f"{where}: 'shadow' is true or false")

    limit = key = ban = None
    if "limit" in raw:
        limit, key = _parse_limit(doc, raw, where)
        if action == "allow":
            reason = f"{where}: a limit's action is what happens when it is exceeded: throttle or block"
            raise doc.error(raw, "action", reason)
    elif action == "throttle":
        raise doc.error(raw, "action", f"{where}: 'throttle' needs a 'limit' (it answers 429 with the time to wait)")
    if "ban" in raw:
        if limit is None:
            raise doc.error(raw, "ban", f"{where}: 'ban' escalates a limit; this rule has no 'limit'")
        ban = _parse_ban(doc, raw, where)
    return Rule(
        id=rule_id,
        match=match,
        action=action,
        limit=limit,
        key=key,
        ban=ban,
        reason=raw.get("reason"),
        description=raw.get("description"),
        line=doc.line(parent, i),
        shadow=raw.get("shadow", False),
    )


def _parse_limit(doc: Located, raw: dict, where: str) -> tuple[RateLimit | DistinctLimit | Budget, str]:
    spec = raw["limit"]
    _mapping(doc, raw, "limit", spec, {"key", "requests", "per", "burst", "distinct", "max"})
    key = spec.get("key")
    if not is_key_kind(key):
        kinds = ", ".join(KEY_KINDS)
        reason = f"{where}: limit 'key' must be one of {kinds}, or a network level like v4/16, v6/48"
        raise doc.error(spec, "key", reason)
    per = parse_duration(spec.get("per"))
    if per is None:
        raise doc.error(spec, "per", f"{where}: limit 'per' is a positive duration such as 30s, 10m, 1h")
    if "distinct" in spec:
        if spec["distinct"] != "track":
            raise doc.error(spec, "distinct", f"{where}: 'distinct' counts 'track' (the {{track}} of the path)")
        if "requests" in spec or "burst" in spec:
            reason = f"{where}: a limit counts either 'distinct' values or 'requests', not both"
            raise doc.error(spec, "distinct", reason)
        return distinct_limit("track", _int(doc, spec, "max", None, 1, 10**6), per), key
    if "max" in spec:
        raise doc.error(spec, "max", f"{where}: 'max' goes with 'distinct'; request limits use 'requests' and 'burst'")
    requests = _int(doc, spec, "requests", None, 1, 10**9)
    burst = _int(doc, spec, "burst", requests, 1, 10**9)
    return RateLimit(requests, per, burst), key


def _parse_ban(doc: Located, raw: dict, where: str) -> Ban:
    spec = raw["ban"]
    _mapping(doc, raw, "ban", spec, {"after", "within", "for"})
    after = _int(doc, spec, "after", None, 1, 10**6)
    within = parse_duration(spec.get("within"))
    duration = parse_duration(spec.get("for"))
    if within is None:
        raise doc.error(spec, "within", f"{where}: ban 'within' is a positive duration")
    if duration is None:
        raise doc.error(spec, "for", f"{where}: ban 'for' is a positive duration")
    return Ban(after, within, duration)


def _no_unknown_keys(doc: Located, mapping: dict, allowed: set[str], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise doc.error(mapping, key, f"unknown {what} {key!r} (expected one of: {', '.join(sorted(allowed))})")


def _mapping(doc: Located, parent: dict, key: str, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise doc.error(parent, key, f"'{key}' must be a mapping")
    _no_unknown_keys(doc, value, allowed, f"'{key}' field")


def _names(doc: Located, parent: dict, key: str, allowed: set[str] | None, what: str) -> list[str]:
    """A name or list of names under ``parent[key]``, each checked against ``allowed``."""
    value = parent.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise doc.error(parent, key, f"'{key}' is a {what} name or a list of them")
    if allowed is not None:
        for j, name in enumerate(value):
            if name not in allowed:
                known = ", ".join(sorted(allowed))
                container, index = (value, j) if doc.line(value) is not None else (parent, key)
                raise doc.error(container, index, f"unknown {what} {name!r} (known: {known})")
    return value


def _int(doc: Located, parent: dict, key: str, default: int | None, low: int, high: int) -> int:
    value = parent.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise doc.error(parent, key, f"'{key}' must be a whole number from {low} to {high}")
    return value
