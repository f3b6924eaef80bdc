"""The rules file as a typed model: one class per section, one field per key.

This is the single definition of the rules file format. Loading (guard/policy/rules.py),
``guard check``, the JSON Schema (``guard schema``, rules/schema.json) and the reference
documentation (``guard schema --markdown``, docs/rules-reference.md) all come from here,
so they cannot disagree. Every field's ``description=`` IS the reference documentation:
write it for the operator who edits the file.

How to add a key
----------------
1. Add a field to the section class it belongs to (or a new :class:`Section` subclass,
   referenced by a field of its parent), with a default when the key is optional and a
   ``description=``. Use the validated types below where they fit: ``Duration``
   (``30s``, ``10m``, ...), ``Cidr``, ``OneOrMany[...]`` (a name or a list of names),
   ``GroupName``, ``GroupRef``/``CategoryRef``/``AgentRef`` (checked against the file's
   path groups and the catalogue), ``Literal[...]`` for a fixed set of words.
2. Checks that involve several keys go in a ``@model_validator(mode="after")`` of the
   section; report each problem at its own key with :func:`guard.config.fail`.
3. Compile the field into :class:`guard.policy.rules.Policy` (or :class:`Rule`) in
   :func:`guard.policy.rules.compile_policy`: the request path reads only the compiled
   structures, never the model.
4. Regenerate the schema and the reference: ``guard schema > rules/schema.json`` and
   ``guard schema --markdown > docs/rules-reference.md`` (tests compare both).
5. Add a bad-file case to tests/test_rules_errors.py: the message and the line it names.

Errors come out as ``file:line:col: reason``, one per problem (guard/config.py maps each
pydantic error to the YAML position of the key or value).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from guard.config import UNION_TAG, Section, context, fail, json_schema_of, problem, show
from guard.consent.settings import DEFAULT_ARTIST_PATHS, DEFAULT_LEDGER, DEFAULT_PRICE, DEFAULT_USAGES
from guard.policy.limits import KEY_KINDS, is_key_kind
from guard.policy.paths import OTHER, pattern_problem
from guard.sessions.settings import HOW_TO

#: Categories that exist beside the catalogue's own.
BUILTIN_CATEGORIES = {
    "unknown": "Not in the catalogue, shaped like a browser's User-Agent: a browser, or a tool that hides.",
    "spoofed": "Claims to be a verifiable crawler but failed verification.",
    "unknown_bot": "Not in the catalogue, but declares itself automated (bot word, contact URL or e-mail).",
    "unknown_preview": "Not in the catalogue, but calls itself a link previewer (preview, unfurl, onebox, ...).",
    "padded": "A User-Agent longer than any client sends (over 2 KB) that names nothing at its ends: padding "
    "that hides a name.",
    "http_client": "Not in the catalogue, not shaped like a mainstream browser and not naming itself: a visitor "
    "(a TV, an app, an e-reader, an unnamed program).",
    "verifying": "Claims a crawler checked by reverse DNS, and the check is still running.",
    "app": "One of the platform's own apps, named in the rules' `apps:`.",
}
ACTIONS = ("allow", "block", "throttle", "challenge")
#: What a rule's ``match.session`` can name (see guard/sessions/tokens.py).
SESSION_STATES = ("none", "fresh", "page", "proven")

# -- validated types ------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_NAME_FORM = "lower-case letters, digits, - _ ."
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
DURATION_FORMS = "a positive duration such as 250ms, 30s, 10m, 1h, 1d (a bare number is seconds)"


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


def _duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds is None:
        raise problem(f"{show(value)} is not {DURATION_FORMS}")
    return seconds


#: Seconds, written ``30``, ``30s``, ``10m``, ``1h``, ``1d`` or ``250ms``.
Duration: TypeAlias = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
            ]
        }
    ),
]


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise problem(f"'{value}' is not an address or CIDR (such as 10.0.0.0/8 or 2001:db8::/32)") from None
    return value


#: An IPv4 or IPv6 address or network (host bits may be set).
Cidr: TypeAlias = Annotated[str, AfterValidator(_cidr)]


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise problem(f"'{value}' is not a valid name ({_NAME_FORM})")
    return value


#: A rule id or key prefix: lower-case letters, digits, ``-``, ``_``, ``.``.
Name: TypeAlias = Annotated[str, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": _NAME.pattern})]


def _group_name(value: str) -> str:
    _name(value)
    if value == OTHER:
        raise problem(f"'{OTHER}' is the implicit group of paths no group matches; choose another name")
    return value


#: A path group's name (not ``other``, which holds the paths no group matches).
GroupName: TypeAlias = Annotated[
    str,
    AfterValidator(_group_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern, "not": {"const": OTHER}}),
]


def _path_pattern(pattern: str) -> str:
    reason = pattern_problem(pattern)
    if reason is not None:
        raise problem(reason)
    return pattern


#: A robots.txt-style pattern: a prefix, ``*``, a final ``$``, or ``{track}`` / ``{track:TYPE}`` segments.
PathPattern: TypeAlias = Annotated[
    str, AfterValidator(_path_pattern), WithJsonSchema({"type": "string", "pattern": "^/"})
]


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


if TYPE_CHECKING:
    OneOrMany = list  # to type checkers, what the model holds once validated
else:

    class OneOrMany:
        """``OneOrMany[T]``: a single ``T`` or a list of them, always a list once validated."""

        def __class_getitem__(cls, item: Any) -> Any:
            one = json_schema_of(item)
            return Annotated[
                list[item],
                BeforeValidator(_listify),
                WithJsonSchema({"anyOf": [one, {"type": "array", "items": one}]}),
            ]


def _known(kind: str, key: str, *, lower: bool = False, extra: tuple[str, ...] = ()) -> AfterValidator:
    """A validator checking a name against the names the loader put in the context under ``key``."""

    def check(value: str, info: ValidationInfo) -> str:
        known = context(info, key)
        if known is None:
            return value  # validated without a file around it (e.g. for the schema)
        names = {*known, *extra}
        candidates = {n.lower() for n in names} if lower else names
        if (value.lower() if lower else value) not in candidates:
            raise problem(f"unknown {kind} '{value}' ({_suggest(value, sorted(names, key=str.lower))})")
        return value

    return AfterValidator(check)


def _suggest(value: str, names: list[str]) -> str:
    """The valid names, or the closest few when there are many (the catalogue has hundreds of agents)."""
    if len(names) <= 20:
        return "known: " + ", ".join(names)
    close = difflib.get_close_matches(value.lower(), [n.lower() for n in names], n=3, cutoff=0.8)
    spelled = [next(n for n in names if n.lower() == c) for c in close]
    return f"did you mean {' or '.join(spelled)}?" if spelled else f"not one of the {len(names)} known"


#: A path group of this file, or ``other``.
GroupRef: TypeAlias = Annotated[str, _known("path group", "groups", extra=(OTHER,))]
#: A path group of this file (not ``other``).
OwnGroupRef: TypeAlias = Annotated[str, _known("path group", "groups")]
#: A category of the catalogue, or ``unknown`` / ``spoofed``.
CategoryRef: TypeAlias = Annotated[str, _known("category", "categories", extra=tuple(BUILTIN_CATEGORIES))]
#: A category of the catalogue.
CatalogueCategoryRef: TypeAlias = Annotated[str, _known("category", "categories")]
#: An agent of the catalogue, by name (any case).
AgentRef: TypeAlias = Annotated[str, _known("agent", "agents", lower=True)]


def _header_value(value: str | None) -> str | None:
    if value is not None and ("\n" in value or "\r" in value):
        raise problem("a header value is one line")
    return value


#: One line of text, sent as an HTTP header value.
HeaderValue: TypeAlias = Annotated[str | None, AfterValidator(_header_value)]


def _existing_file(value: str | None, info: ValidationInfo) -> str | None:
    base = context(info, "base_dir")
    if value is None or base is None or value == "upstream":
        return value
    if not (Path(base) / value).is_file():
        raise problem(f"'{value}' is not a file (relative paths start from the rules file's folder)")
    return value


#: A file path, relative to the rules file, that must exist.
ExistingFile: TypeAlias = Annotated[str | None, AfterValidator(_existing_file)]


def _absolute_path(value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise problem(f"'{value}' is not a path: it starts with '/', e.g. /metrics")
    return value


_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _cookie_name(value: str) -> str:
    if not _COOKIE_NAME.match(value):
        raise problem(f"'{value}' is not a cookie or parameter name (letters, digits, _ and -)")
    return value


def _redis_url(value: str | None) -> str | None:
    if value is not None and "://" not in value:
        raise problem(f"'{value}' is not a Redis URL: redis://host:port/db or redis+cluster://host:port")
    return value


def _limit_key(value: str) -> str:
    if not is_key_kind(value):
        raise problem(f"'{value}' is not one of: {', '.join(KEY_KINDS)}, or a network level like v4/16, v6/48")
    return value


#: What a limit counts by (see guard.policy.limits.KEY_KINDS).
LimitKey: TypeAlias = Annotated[
    str,
    AfterValidator(_limit_key),
    WithJsonSchema({"anyOf": [{"enum": list(KEY_KINDS)}, {"type": "string", "pattern": r"^v(4|6)/[1-9][0-9]*$"}]}),
]


# -- sections -------------------------------------------------------------------------------


class ReverseDns(Section):
    """Forward-confirmed reverse DNS for crawlers whose operators publish only hostnames."""

    enabled: bool = Field(
        True, description="Check claims of crawlers that publish only hostnames (Yandex, Baidu, ...) in the background."
    )
    pending: Literal["verifying", "unknown", "spoofed"] = Field(
        "verifying",
        description="How a request is judged while its lookup runs: `verifying` (answered 429 with a short "
        "Retry-After: a real crawler comes back once verified, a spoofer gets nothing), `unknown` (counted "
        "like any visitor) or `spoofed` (blocked).",
    )
    retry_after: Duration = Field(10.0, description="The Retry-After of the 429 a `verifying` request gets.")


class Signatures(Section):
    """Web Bot Auth: crawlers that sign their requests (HTTP Message Signatures)."""

    directory: ExistingFile = Field(
        None, description="JSON file of signer keys (relative to the rules file). Absent: signatures are not checked."
    )


class Clients(Section):
    """What one client is, for limits keyed `ip` and `ip_ua`."""

    ipv4: int = Field(32, ge=1, le=32, description="IPv4 prefix length of one client (32: one address).")
    ipv6: int = Field(64, ge=1, le=128, description="IPv6 prefix length of one client (64: a host can rotate its /64).")
    forwarded: Literal["x-forwarded-for", "forwarded", "x-real-ip"] = Field(
        "x-forwarded-for",
        description="The one header the trusted proxies write: `x-forwarded-for`, `forwarded` (RFC 7239 `for=`) "
        "or `x-real-ip`. Every other forwarding header is ignored. It is walked from the right over trusted "
        "proxies only; the first other entry is the client, and nothing left of it is read. See docs/proxies.md.",
    )


class Subnets(Section):
    """Neighbouring addresses counted together, for limits keyed `subnet`."""

    ipv4: int = Field(24, ge=1, le=32, description="IPv4 prefix length of a subnet.")
    ipv6: int = Field(64, ge=1, le=128, description="IPv6 prefix length of a subnet.")


class Memory(Section):
    """The embedded memory store (also Redis's fallback while Redis is down)."""

    max_entries: int = Field(
        200_000, ge=1, le=10**9, description="Bound on counters, sets and bans kept in memory together."
    )


class Metrics(Section):
    """The Prometheus endpoint."""

    path: Annotated[str | None, AfterValidator(_absolute_path)] = Field(
        None, description="Where the metrics are served, e.g. `/metrics`. Absent: not served."
    )
    allow: list[Cidr] = Field(
        ["127.0.0.1/32", "::1/128"], description="Addresses or CIDRs that may read the metrics; others get 404."
    )


class Log(Section):
    """The decision log."""

    sample_allows: float = Field(
        0.0, ge=0, le=1, description="Share of allowed requests written to the decision log (0 to 1)."
    )


class Redis(Section):
    """Shared counters in Redis (`--redis-url` / `GUARD_REDIS_URL` override the url)."""

    url: Annotated[str | None, AfterValidator(_redis_url)] = Field(
        None,
        description="`redis://host:port/db`, `rediss://...` or `redis+cluster://host:port`. Absent: memory store.",
    )
    namespace: Name = Field("guard", description="Prefix of every key guard writes.")
    timeout: Duration = Field(0.05, description="Per call; a slower answer counts as Redis down.")
    fail: Literal["open", "closed"] = Field(
        "open",
        description="While Redis is down: `open` counts in memory on each instance; `closed` throttles "
        "every counted request.",
    )


class TdmPolicy(Section):
    """TDMRep with a policy document."""

    policy: str | None = Field(None, description="URL of the TDM policy, published as `tdm-policy`.")


def _tdmrep_form(value: Any) -> str:
    return f"{UNION_TAG}policy" if isinstance(value, dict) else f"{UNION_TAG}flag"


class Directives(Section):
    """What guard publishes for crawlers, generated from the catalogue and the rules."""

    robots_txt: bool = Field(True, description="Serve `/robots.txt` generated from these rules.")
    ai_txt: bool = Field(True, description="Serve `/ai.txt` (Spawning's format).")
    default_disallow: OneOrMany[OwnGroupRef] = Field(
        [], description="Path groups that robots.txt asks every other crawler (`User-agent: *`) to stay out of."
    )
    sitemap: str | None = Field(None, description="Absolute URL of the sitemap, listed in robots.txt.")
    merge_robots: ExistingFile = Field(
        None,
        description="Add the application's own robots.txt: `upstream` (ask the app for `/robots.txt`) "
        "or a file path relative to the rules file.",
    )
    enforce_robots: bool = Field(
        True, description="Block an identified crawler on any path its own robots.txt group disallows."
    )
    content_usage: HeaderValue = Field(
        None,
        description="IETF AI preferences, e.g. `train-ai=n`: a Content-Usage line in robots.txt and a header "
        "on content responses. Absent or null: off.",
    )
    x_robots_tag: HeaderValue = Field(
        None, description="`X-Robots-Tag` on content responses, e.g. `noai, noimageai`. Absent or null: off."
    )
    tdmrep: Annotated[
        Annotated[bool, Tag(f"{UNION_TAG}flag")] | Annotated[TdmPolicy, Tag(f"{UNION_TAG}policy")],
        Discriminator(_tdmrep_form),
    ] = Field(
        False,
        description="TDMRep (W3C): `/.well-known/tdmrep.json` and the `tdm-reservation` header. "
        "`true`, `false`, or `{policy: URL}`.",
    )


def _artist_path(pattern: str) -> str:
    if not pattern.startswith("/") or pattern.count("{artist}") != 1 or "*" in pattern or "$" in pattern:
        reason = "it starts with '/' and names '{artist}' once, e.g. /artists/{artist}"
        raise problem(f"'{pattern}' is not an artist path: {reason}")
    return pattern


def _price(value: str | None) -> str | None:
    from guard.consent.model import ConsentError, Price

    if value is not None and value != "none":
        try:
            Price.parse(value)
        except ConsentError as exc:
            raise problem(str(exc)) from None
    return value


class Consent(Section):
    """Artists' opt-ins to AI use (docs/consent.md): where they live, what AI use is, prices, licences."""

    source: Literal["file", "redis", "app"] = Field(
        "file",
        description="Where consents live: `file` (the YAML `file` below, re-read when it changes), `redis` "
        "(the `redis:` server, read per request: a revoke applies to the next one) or `app` (the "
        "application's `consent_lookup`).",
    )
    file: ExistingFile = Field(None, description="With `source: file`: the consent file, relative to the rules file.")
    artist_paths: list[Annotated[str, AfterValidator(_artist_path)]] = Field(
        list(DEFAULT_ARTIST_PATHS),
        description="Path patterns that name an artist as `{artist}`; tracks map to artists through the "
        "application's `artist_resolver`.",
    )
    usages: dict[CatalogueCategoryRef, Literal["search", "ai-input", "ai-train"]] = Field(
        dict(DEFAULT_USAGES),  # type: ignore[arg-type]
        description="What each catalogue category's requests are used for; other categories are not AI use.",
    )
    price: Annotated[str | None, AfterValidator(_price)] = Field(
        str(DEFAULT_PRICE),
        description="Pay per crawl price per request, e.g. `USD 0.01` (a consent may set its own); "
        "`none` or null: licences only.",
    )
    issuer: str = Field("guard", description="The `iss` of the licence tokens the platform signs.")
    licence_key: str | None = Field(
        None,
        description="The Ed25519 JWK file that signs licence tokens, relative to the rules file (created on "
        "first use). Absent: `$GUARD_LICENCE_KEY` or ~/.config/guard/licence-key.json.",
    )
    public_url: str | None = Field(
        None,
        description="The site's public origin, e.g. `https://music.example`, for the absolute URLs of "
        "license.xml. Absent: built from the request's Host.",
    )
    authorization_uri: str | None = Field(
        None, description="Where crawlers obtain a licence (`WWW-Authenticate`). Absent: the license.xml."
    )
    ledger: str = Field(
        DEFAULT_LEDGER,
        description="The accounting file (JSON lines) of the embedded store, relative to the rules file; "
        "with Redis the records go to a capped stream instead.",
    )
    ledger_max: int = Field(10_000_000, ge=1000, description="Bound of the Redis accounting stream.")
    cache_ttl: Duration = Field(30.0, description="How long an answer of the application's lookup is cached.")
    refresh: Duration = Field(2.0, description="How often the consent file (or the Redis listing) is re-read.")

    @model_validator(mode="after")
    def _file_for_file(self) -> Consent:
        if self.source == "file" and self.file is None:
            fail((["file"], "'source: file' needs the consent 'file'"))
        return self


class Match(Section):
    """A rule's conditions: all must hold. Empty or absent: every request."""

    category: OneOrMany[CategoryRef] = Field(
        [],
        description="One or a list of categories: the catalogue's, or `unknown`, `spoofed`, `unknown_bot`, "
        "`unknown_preview`, `padded`, `http_client`, `verifying`, `app`.",
    )
    agent: OneOrMany[AgentRef] = Field([], description="One or a list of catalogue agent names (any case).")
    path: OneOrMany[GroupRef] = Field([], description="One or a list of path groups (or `other`).")
    user_agent: Literal["missing", "present"] | None = Field(
        None, description="`missing` (absent or blank) or `present`."
    )
    session: OneOrMany[Literal["none", "fresh", "page", "proven"]] = Field(
        [],
        description="One or a list of session states: `none` (no valid session), `fresh` (a session that has "
        "not loaded a page), `page` (it has), `proven` (it solved a challenge, or an app issued it).",
    )
    network: Literal["hosting"] | None = Field(
        None, description="`hosting`: the client is in a cloud or hosting provider's published ranges."
    )


class Limit(Section):
    """What a rule counts: `requests` per `per` (GCRA), or at most `max` `distinct` tracks per `per`."""

    key: LimitKey = Field(
        description="Who is counted: `ip` (one client, every User-Agent behind it), `ip_ua` (one client with "
        "one User-Agent: one browser), `subnet` (the client's subnet), `session` (the signed session, else as "
        "`ip_ua`), `provider` (everyone in one hosting provider's ranges), `agent` (everyone sending one "
        "agent's name, across the platform: the catalogue agent, the name a self-declared bot gives, else the "
        "User-Agent string), or a network level `v4/16`, `v6/48`."
    )
    per: Duration = Field(
        description="The window: requests per this long, or distinct values in any window this long. A distinct "
        "limit of an hour or more is a budget: counted in 24 slices of HyperLogLog (docs/budgets.md)."
    )
    requests: int | None = Field(None, ge=1, le=10**9, description="Requests per `per`, sustained.")
    burst: int | None = Field(None, ge=1, le=10**9, description="Requests allowed back to back (default: `requests`).")
    distinct: Literal["track", "session", "user_agent", "network"] | None = Field(
        None,
        description="Count distinct values instead of requests: `track` (the `{track}` of the path), "
        "`session` (the different sessions fetching tracks, as the `session` key names them), "
        "`user_agent` (the different User-Agents fetching tracks, e.g. per session: a browser and its "
        "media stack are two), or `network` (the different networks, /24 or /48 as sessions bind them, "
        "fetching tracks, e.g. per session: a phone on Wi-Fi and 4G is two or four).",
    )
    max: int | None = Field(None, ge=1, le=10**6, description="With `distinct`: most distinct values per `per`.")

    @model_validator(mode="after")
    def _one_kind(self) -> Limit:
        if self.distinct is not None:
            if self.requests is not None or self.burst is not None:
                fail((["distinct"], "a limit counts either 'distinct' values or 'requests', not both"))
            if self.max is None:
                fail((["max"], "'max' is required with 'distinct' (the most distinct tracks per 'per')"))
        elif self.max is not None:
            fail((["max"], "'max' goes with 'distinct'; request limits use 'requests' and 'burst'"))
        elif self.requests is None:
            fail((["requests"], "'requests' is required (or 'distinct: track' with 'max')"))
        return self


class Ban(Section):
    """Escalation: repeated denials of a limit ban its key."""

    after: int = Field(ge=1, le=10**6, description="Denials that trigger the ban.")
    within: Duration = Field(description="...counted within this long of the first one.")
    for_: Duration = Field(alias="for", description="How long the ban lasts (403 with Retry-After).")
    scope: Literal["client", "address", "subnet"] | None = Field(
        None,
        description="What the ban covers (default: the limit key's own scope). `client` (keys `ip_ua`, "
        "`session`): the browser, and its address is held: a User-Agent new to the address inherits the ban, "
        "devices seen there before go on; bans under two User-Agents ban the address. `address`: the whole "
        "address; three banned addresses in a subnet ban the subnet for a quarter of the time. `subnet`: the "
        "whole subnet. See docs/bans.md.",
    )


class Rule(Section):
    """One entry of `rules:`, read top to bottom."""

    id: Name = Field(description="Unique; appears in logs and in the 403/429 body.")
    description: str | None = Field(None, description="For people.")
    match: Match = Field(Match(), description="The conditions; absent: every request.")
    action: Literal["allow", "block", "throttle", "challenge"] = Field(
        description="`allow`, `block` (403), `throttle` (429 with Retry-After; only with a `limit`), or "
        "`challenge` (a proof-of-work page for a browser's page load, 401 or 429 for anything else; never for "
        "a proven session). With a `limit`, what happens when it is exceeded."
    )
    limit: Limit | None = Field(None, description="Makes the rule a counter.")
    ban: Ban | None = Field(None, description="Escalates a `limit`.")
    reason: str | None = Field(None, description="Text of the 403 body (default: the description).")
    shadow: bool = Field(False, description="`true`: log and count what the rule would do, never enforce it.")
    after: Name | None = Field(
        None,
        description="With `extends`: put this rule right after the rule with this id. Without `after` or "
        "`before`, a rule with an inherited id takes that rule's place and a new rule goes before all "
        "the inherited ones.",
    )
    before: Name | None = Field(None, description="With `extends`: put this rule right before the rule with this id.")
    remove: bool = Field(
        False, description="With `extends`: `true` drops the inherited rule with this `id` (write only `id` and this)."
    )

    @model_validator(mode="after")
    def _action_fits(self) -> Rule:
        problems: list[tuple[list[str], str]] = []
        if self.limit is not None and self.action == "allow":
            reason = "a limit's action is what happens when it is exceeded: throttle, block or challenge"
            problems.append((["action"], reason))
        if self.limit is None and self.action == "throttle":
            problems.append((["action"], "'throttle' needs a 'limit' (it answers 429 with the time to wait)"))
        if self.ban is not None and self.limit is None:
            problems.append((["ban"], "'ban' escalates a limit; this rule has no 'limit'"))
        client_scope = self.ban is not None and self.ban.scope == "client"
        if client_scope and self.limit is not None and self.limit.key not in ("ip_ua", "session"):
            reason = f"scope 'client' is for limits keyed ip_ua or session, not {self.limit.key}"
            problems.append((["ban", "scope"], reason))
        if problems:
            fail(*problems)
        return self


class MintLimit(Section):
    """New sessions allowed: `requests` per `per`, up to `burst` at once."""

    requests: int = Field(ge=1, le=10**9, description="New sessions per `per`, sustained.")
    per: Duration = Field(description="The window, e.g. 1h.")
    burst: int | None = Field(None, ge=1, le=10**9, description="New sessions at once (default: `requests`).")


class SessionCookie(Section):
    """The session cookie's name and attributes."""

    name: Annotated[str, AfterValidator(_cookie_name)] = Field(
        "guard_session", description="The cookie's name (letters, digits, `_`, `-`)."
    )
    http_only: bool = Field(True, description="HttpOnly: page scripts cannot read it.")
    secure: bool | Literal["auto"] = Field(
        "auto", description="Secure: `true`, `false`, or `auto` (Secure when the request came over https)."
    )
    same_site: Literal["Lax", "Strict", "None"] = Field(
        "Lax", description="SameSite. `None` for players embedded on other sites (implies Secure)."
    )
    partitioned: bool = Field(
        False,
        description="Partitioned (CHIPS), with `same_site: None`: the cookie lives in the embedding site's partition.",
    )

    @model_validator(mode="after")
    def _cross_site_needs_secure(self) -> SessionCookie:
        if self.same_site == "None" and self.secure is False:
            reason = "a cross-site cookie must be Secure (browsers refuse it otherwise): 'secure' is true or auto"
            fail((["secure"], reason))
        return self


class Challenge(Section):
    """The proof-of-work interstitial of `action: challenge`."""

    difficulty: int = Field(
        16, ge=1, le=32, description="Leading zero bits of SHA-256 the browser must find (16: about 65,000 hashes)."
    )
    ttl: Duration = Field(300.0, description="A challenge must be answered within this.")
    fallback: bool = Field(
        True, description="Offer browsers without JavaScript a meta refresh that the server checks waited `wait`."
    )
    wait: Duration = Field(10.0, description="The no-JavaScript fallback's delay.")
    proof_ttl: Duration = Field(86400.0, description="A solved challenge keeps the session `proven` this long.")
    path: Annotated[str | None, AfterValidator(_absolute_path)] = Field(
        "/.guard/challenge", description="Where answers are sent (the guard answers it itself)."
    )


class Sessions(Section):
    """Signed sessions bound to audio (docs/sessions.md). Absent: no sessions."""

    issue: OneOrMany[OwnGroupRef] = Field(
        description="Path groups whose responses set a session for visitors that have none (pages, the API)."
    )
    require: OneOrMany[OwnGroupRef] = Field(
        description="Path groups served only with a valid session (audio). Never the pages, the directives or "
        "the health check: search engines and link previews must not need one."
    )
    ttl: Duration = Field(86400.0, description="A session's life.")
    grace: Duration = Field(
        7 * 86400.0,
        description="A session that had loaded a page and is past its `ttl` by less than this is renewed by "
        "its next request, whatever it is (a tab left open overnight plays on). The cookie's Max-Age is "
        "`ttl` + 2 x `grace`: for a second grace the expired cookie still says the device had loaded a page.",
    )
    ipv4: int = Field(24, ge=8, le=32, description="The IPv4 prefix a session is bound to.")
    ipv6: int = Field(48, ge=16, le=128, description="The IPv6 prefix a session is bound to.")
    mint_per_address: MintLimit = Field(
        MintLimit(requests=30, per=3600.0, burst=30), description="New sessions per client address."
    )
    mint_per_subnet: MintLimit = Field(
        MintLimit(requests=300, per=3600.0, burst=100), description="New sessions per subnet."
    )
    cookie: SessionCookie = Field(SessionCookie(), description=SessionCookie.__doc__)
    challenge: Challenge = Field(Challenge(), description=Challenge.__doc__)
    url_param: Annotated[str, AfterValidator(_cookie_name)] = Field(
        "guard_sig", description="The query parameter of signed stream URLs."
    )
    how_to: str = Field(
        HOW_TO,
        min_length=1,
        max_length=200,
        pattern=r"^[^\r\n]*$",
        description="The end of the one-line 401 for audio without a session: how to get one.",
    )
    key_env: str = Field(
        "GUARD_SESSION_KEY",
        description="Environment variable holding the signing key (and `<name>_PREVIOUS` during a rotation).",
    )
    key_file: ExistingFile = Field(
        None,
        description="A file with the signing key on line 1 and the previous one on line 2; read at start-up "
        "and on reload. Takes precedence over `key_env`.",
    )


_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|m)?bps\s*$", re.IGNORECASE)


def _bitrate(value: Any) -> float:
    """Bits per second from ``320kbps``, ``1.4mbps``, ``96000bps`` or a bare number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _BITRATE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise problem(f"{show(value)} is not a bitrate such as 320kbps, 1.4mbps or 96000 (bits per second)")
    return float(match.group(1)) * {"k": 1e3, "m": 1e6, None: 1.0}[(match.group(2) or "").lower() or None]


Bitrate: TypeAlias = Annotated[
    float,
    BeforeValidator(_bitrate),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmM])?bps\s*$"},
            ]
        }
    ),
]


class Pacing(Section):
    """Audio at playback pace (docs/sessions.md): the body of an audio response is sent no faster than
    `multiple` times real time after a `buffer`; never refused, only paced."""

    paths: OneOrMany[OwnGroupRef] = Field(description="Path groups whose 200 and 206 responses are paced (audio).")
    multiple: float = Field(
        4.0, ge=1.0, le=1000.0, description="Seconds of audio a session obtains per second, after the buffer."
    )
    buffer: Duration = Field(30.0, description="Seconds of audio a session may take at once (playback starts at once).")
    bitrate: Bitrate = Field(
        320_000.0,
        description="Bits per second of audio, e.g. `320kbps`, for responses that do not name their duration "
        "in `duration_header` (with it, the pace is the track's size divided by its duration).",
    )
    duration_header: Annotated[str, AfterValidator(_cookie_name)] = Field(
        "X-Content-Duration", description="The response header in which the application names the track's seconds."
    )
    max_sessions: int = Field(
        100_000, ge=100, le=10**7, description="Sessions whose budgets each process keeps (the stalest forgotten)."
    )


class TokenIssuer(Section):
    """A Privacy Pass issuer whose publicly verifiable tokens (type 0x0002) are accepted."""

    name: str = Field(
        min_length=1, max_length=255, description="The issuer's name, as in the TokenChallenge (e.g. its host)."
    )
    token_key: str = Field(
        min_length=16,
        description="The issuer's public key: base64url of its SubjectPublicKeyInfo, as its directory "
        "(`/.well-known/private-token-issuer-directory`) publishes it.",
    )

    @field_validator("token_key")
    @classmethod
    def _rsa_key(cls, value: str) -> str:
        from guard.privatetoken import issuer

        try:
            issuer("issuer", value)
        except ValueError as error:
            raise problem(str(error).replace("'issuer'", "this issuer")) from None
        return value


class PrivateTokens(Section):
    """Private Access Tokens (docs/sessions.md): during a sweep, a young session that presents a valid
    Privacy Pass token from one of these issuers skips the escalation."""

    issuers: list[TokenIssuer] = Field(min_length=1, description="The issuers whose tokens are accepted.")
    paths: OneOrMany[OwnGroupRef] = Field(
        description="Path groups where a sweep escalates young sessions, and where tokens are asked for (audio)."
    )
    young: Duration = Field(3600.0, description="A session younger than this, and not proven, is young.")
    origin: str | None = Field(
        None, description="The origin named in the challenge (e.g. `music.example`). Absent: tokens for any origin."
    )
    window: Duration = Field(
        300.0, description="Challenges change every `window` (the current and previous one are accepted)."
    )
    sweep: bool = Field(
        False, description="Treat the site as under a sweep now (testing; the sweep detector sets it at run time)."
    )


def _app_token(value: str) -> str:
    from guard.identity.catalogue import words

    if not words(value):
        raise problem(f"token '{value}' has no letters or digits to match")
    return value


class App(Section):
    """One of the platform's own apps: category `app`, served like a listener and counted like one."""

    name: str = Field(min_length=1, description="Display name, e.g. `Music iOS`.")
    ua: list[Annotated[str, AfterValidator(_app_token)]] = Field(
        min_length=1,
        description="Tokens of its User-Agent, matched like catalogue tokens (whole words, lookalikes folded).",
    )


class CanaryBan(Section):
    """What a canary fetch costs its client."""

    for_: Duration = Field(
        86400.0, alias="for", description="How long the session (else the browser) and its rare fingerprint are banned."
    )
    address_for: Duration = Field(
        3600.0,
        description="How long its address is banned, under every User-Agent: shorter, as a rented residential "
        "address is someone's home and a carrier's address holds many people.",
    )
    network_for: Duration = Field(
        600.0, description="How long its network (the subnet of `subnets:`) is banned: shorter still."
    )


class Canaries(Section):
    """Track ids no person can reach: whoever fetches one is a scraper (docs/sweeps.md). Absent: off."""

    range: list[int] = Field(
        [9_000_000_000, 9_999_999_999],
        min_length=2,
        max_length=2,
        description="`[low, high]`: numeric track ids the application never issues. Canary ids are drawn from "
        "it with a secret, so a scraper walking ids there meets them and nobody can list them.",
    )
    count: int = Field(64, ge=1, le=100_000, description="How many canary ids are derived from the key.")
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        [], description="More canary ids: tracks the application never links (unpublished, retired)."
    )
    key_env: str = Field(
        "GUARD_CANARY_KEY",
        description="Environment variable of the secret the ids are derived from (else the session key's, "
        "else random per process).",
    )
    links: list[Annotated[str, AfterValidator(_absolute_path)]] = Field(
        ["/api/tracks/{id}"],
        min_length=1,
        description="Where baited links point, `{id}` for the canary id: paths robots.txt disallows to every "
        "crawler (the API by default), so no crawler that obeys it follows one.",
    )
    stream: Annotated[str, AfterValidator(_absolute_path)] = Field(
        "/tracks/{id}/stream", description="The audio URL decoy pages and JSON name."
    )
    sitemap: Annotated[str | None, AfterValidator(_absolute_path)] = Field(
        "/sitemap-archive.xml",
        description="A sitemap of canary links, disallowed in robots.txt (null: none).",
    )
    audio: OneOrMany[OwnGroupRef] = Field(["audio"], description="Path groups whose decoy is audio (a WAV).")
    api: OneOrMany[OwnGroupRef] = Field(["content_api"], description="Path groups whose decoy is JSON.")
    ban: CanaryBan = Field(CanaryBan(), description=CanaryBan.__doc__)

    @model_validator(mode="after")
    def _sane(self) -> Canaries:
        low, high = self.range
        if not 0 <= low <= high:
            fail((["range"], "'range' is [low, high] with 0 <= low <= high"))
        elif high - low + 1 < self.count:
            fail((["count"], f"the range holds only {high - low + 1} ids"))
        for i, link in enumerate(self.links):
            if "{id}" not in link:
                fail((["links", i], "a canary link names the id: {id}"))
        return self


def _header_name(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9-]{1,64}$", value):
        raise problem(f"'{value}' is not a header name (letters, digits and -)")
    return value.lower()


def _shipped_or_file(value: str | None, info: ValidationInfo) -> str | None:
    return value if value == "shipped" else _existing_file(value, info)


class Fingerprints(Section):
    """TLS fingerprints (JA4) the trusted edge proxy computed (docs/sweeps.md). Absent: not read."""

    header: Annotated[str, AfterValidator(_header_name)] = Field(
        "cloudfront-viewer-ja4-fingerprint",
        description="The request header the trusted proxy writes the JA4 into: CloudFront's "
        "`cloudfront-viewer-ja4-fingerprint`, or the name a Cloudflare Worker, Akamai, nginx or HAProxy "
        "module is set to write. Read only from trusted proxies.",
    )
    catalogue: Annotated[str | None, AfterValidator(_shipped_or_file)] = Field(
        None,
        description="Known fingerprints: `shipped` (rules/fingerprints.yaml, from FoxIO's public JA4 mapping) "
        "or a file relative to the rules file. A browser's "
        "User-Agent over a library's fingerprint is judged `http_client`; a fingerprint no browser of it "
        "has is rare and counted by limits keyed `fingerprint`. Absent: every fingerprint is rare.",
    )


class RulesFile(Section):
    """A guard rules file."""

    version: Literal[1] = Field(description="The format version: 1, the only one so far.")
    extends: str | None = Field(
        None,
        description="Start from another rules file and change it: `default` (the shipped rules, wherever "
        "guard is installed) or a path relative to this file. Rules combine by `id`, path groups by name, "
        "sections key by key; other keys given here replace the inherited ones.",
    )
    catalogue: str | None = Field(
        None,
        description="The crawler catalogue, relative to this file, or `shipped` (the catalogue that comes with "
        "guard). Absent: `agents.yaml` beside this file if there is one, else `shipped`. The crawlers' "
        "published IP ranges are read from a `ranges/` folder beside this file, or else beside the catalogue.",
    )
    paths: dict[GroupName, OneOrMany[PathPattern]] = Field(
        default_factory=dict,  # the loader puts the shipped groups in when the file gives none
        min_length=1,
        description="Named path groups, each one or a list of patterns. A path belongs to the FIRST group "
        "with a matching pattern, or to `other`. Absent: the shipped groups (directives, health, audio, "
        "content_api, pages), and unless `exempt` is given, the shipped `exempt`.",
    )
    exempt: OneOrMany[GroupRef] = Field([], description="Path groups never checked or counted.")
    apps: list[App] = Field(
        [],
        description="The platform's own apps, so that they are not taken for `http_client`: category `app`, "
        "served like a listener and counted by the same limits (anyone can copy an app's User-Agent).",
    )
    verify: OneOrMany[CatalogueCategoryRef] = Field(
        [],
        description="Categories whose claims are checked against the operator's IP ranges or reverse DNS; "
        "a claim that fails becomes `spoofed`.",
    )
    reverse_dns: ReverseDns = Field(ReverseDns(), description=ReverseDns.__doc__)
    signatures: Signatures = Field(Signatures(), description=Signatures.__doc__)
    shadow: bool = Field(False, description="`true`: decide, log and count, enforce nothing.")
    metrics: Metrics = Field(Metrics(), description=Metrics.__doc__)
    log: Log = Field(Log(), description=Log.__doc__)
    clients: Clients = Field(Clients(), description=Clients.__doc__)
    subnets: Subnets = Field(Subnets(), description=Subnets.__doc__)
    memory: Memory = Field(Memory(), description=Memory.__doc__)
    redis: Redis = Field(Redis(), description=Redis.__doc__)
    directives: Directives = Field(Directives(), description=Directives.__doc__)
    consent: Consent | None = Field(
        None,
        description="Artists' opt-ins to AI use (docs/consent.md). Absent: no consent gate; the rules alone "
        "decide every AI agent.",
    )
    sessions: Sessions | None = Field(None, description=Sessions.__doc__)
    pacing: Pacing | None = Field(None, description=Pacing.__doc__)
    private_tokens: PrivateTokens | None = Field(None, description=PrivateTokens.__doc__)
    canaries: Canaries | None = Field(None, description=Canaries.__doc__)
    fingerprints: Fingerprints | None = Field(None, description=Fingerprints.__doc__)
    rules: list[Rule] = Field(description="The rules, read top to bottom.")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if value != 1 or isinstance(value, bool):
            raise problem("'version: 1' is required (the only version so far)")
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RulesFile:
        problems: list[tuple[list[str | int], str]] = []
        if self.clients.ipv4 < self.subnets.ipv4:
            problems.append((["clients", "ipv4"], f"a client is at most a subnet: at least {self.subnets.ipv4}"))
        if self.clients.ipv6 < self.subnets.ipv6:
            problems.append((["clients", "ipv6"], f"a client is at most a subnet: at least {self.subnets.ipv6}"))
        if self.extends is None:
            for i, rule in enumerate(self.rules):
                for key in ("after", "before", "remove"):
                    if getattr(rule, key):
                        reason = f"'{key}' places a rule among inherited ones: it needs 'extends'"
                        problems.append((["rules", i, key], reason))
        located = context(info, "located")
        first: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.id in first:
                line = located.line(located.data["rules"], first[rule.id]) if located else None
                where = f" (first on line {line})" if line else ""
                problems.append((["rules", i, "id"], f"duplicate rule id '{rule.id}'{where}"))
            first.setdefault(rule.id, i)
        if problems:
            fail(*problems)
        return self


def rules_context(data: Any) -> dict[str, Any]:
    """What reference checks need from the file itself: its path group names."""
    paths = data.get("paths") if isinstance(data, dict) else None
    return {"groups": [name for name in paths if isinstance(name, str)] if isinstance(paths, dict) else []}
