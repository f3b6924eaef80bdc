"""The request path's shortcuts (indexes and bounded caches) decide exactly as the long way does.

Each cache is keyed on everything its answer depends on, stays bounded whatever a client
sends, and starts empty under reloaded rules or new session keys.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CHROME, RULES, FakeClock

import guard.sessions.gate as gate_module
from guard.headers import request_headers
from guard.identity.address import ClientResolver
from guard.policy.engine import Guard
from guard.policy.paths import OTHER, PathGroups, PathMatch
from guard.policy.rules import load_rules
from guard.sessions.service import Sessions
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import Session, SessionKeys
from guard.testing import http_scope

KEY = "k" * 40
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile"

# -- path groups ---------------------------------------------------------------------------------

SEGMENTS = ["", "tracks", "track", "api", "a", "ab", "robots.txt", ".well-known", "7", "stream", "x*y"]
PATTERNS = st.lists(
    st.builds(
        lambda parts, tail, anchored: "/" + "/".join(parts) + tail + ("$" if anchored else ""),
        st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3),
        st.sampled_from(["", "/", "*", "/*", "/{track}", "/{track}/stream", "{track}", "*.mp3", "/*/x"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)
PATHS = st.builds(
    lambda parts, tail: "/" + "/".join(parts) + tail,
    st.lists(st.sampled_from([*SEGMENTS, "007", "tracks7", "apix", "y"]), min_size=0, max_size=4),
    st.sampled_from(["", "/", ".mp3", "/stream", "/x"]),
)


def classify_in_order(groups: PathGroups, path: str) -> PathMatch:
    """The definition: the first pattern in file order that matches, tried one by one."""
    for name, matcher in groups._matchers:
        if hasattr(matcher, "parts"):
            if matcher.match(path):  # type: ignore[union-attr]
                return PathMatch(name, None)
        else:
            matched, raw = matcher.match(path)  # type: ignore[union-attr]
            if matched:
                return PathMatch(name, matcher.canonical(raw) if raw is not None else None, raw)  # type: ignore[union-attr]
    return PathMatch(OTHER, None)


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERNS, min_size=1, max_size=4), st.lists(PATHS, min_size=1, max_size=20))
def test_the_segment_index_classifies_as_trying_every_pattern_in_order(groups, paths) -> None:
    patterns = {f"g{i}": [p for p in ps if not ("{" in p and "*" in p)] or ["/"] for i, ps in enumerate(groups)}
    path_groups = PathGroups(patterns)
    for path in paths:
        expected = classify_in_order(path_groups, path)
        assert path_groups._classify(path) == expected, (patterns, path)
        assert path_groups.classify(path) == expected  # first time (computed) ...
        assert path_groups.classify(path) == expected  # ... and cached


def test_the_shipped_groups_by_segment(policy) -> None:
    paths = policy.paths
    assert paths.classify("/tracks/7") == PathMatch("pages", "7", "7")
    assert paths.classify("/tracks/007/stream") == PathMatch("audio", "7", "007")
    assert paths.classify("/api/tracks/7") == PathMatch("content_api", "7", "7")
    assert paths.classify("/api/albums") == PathMatch("content_api", None)
    assert paths.classify("/robots.txt").group == "directives"
    assert paths.classify("/robots.txtx").group == "directives"  # a prefix, as robots.txt patterns are
    assert paths.classify("/healthz").group == "health"
    assert paths.classify("/healthz/x").group == "pages"
    assert paths.classify("/tracksx/7").group == "pages"
    assert paths.classify("tracks/7").group == OTHER  # no leading slash: no pattern starts so


def test_the_same_path_is_classified_again_under_reloaded_rules(tmp_path: Path) -> None:
    guard = Guard(load_rules(RULES))
    client = guard.resolver.resolve({"client": ("192.0.2.1", 1), "headers": []})
    assert guard.facts(client, CHROME, "/listen/7").where.group == "pages"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f'version: 1\nextends: {RULES}\npaths:\n  audio: ["/listen/{{track}}"]\n')
    guard.use_policy(load_rules(rules))
    assert guard.facts(client, CHROME, "/listen/7").where == PathMatch("audio", "7", "7")


# -- one pass over the headers -------------------------------------------------------------------


def test_headers_sent_on_several_lines_read_as_before() -> None:
    lines = [
        (b"user-agent", b"Mozilla/5.0"),
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"cookie", b"a=1"),
        (b"user-agent", b"(Windows)"),
        (b"sec-fetch-mode", b"cors"),
        (b"x-forwarded-for", b"192.0.2.8"),
        (b"cookie", b"guard_session=x"),
        (b"sec-fetch-mode", b"navigate"),
    ]
    headers = request_headers({"headers": lines})
    assert headers[b"user-agent"] == b"Mozilla/5.0 (Windows)"  # a name split over two lines is still the name
    assert headers[b"x-forwarded-for"] == b"198.51.100.1,192.0.2.8"  # one chain, in order
    assert headers[b"cookie"] == b"a=1; guard_session=x"  # HTTP/2: a line per cookie
    assert headers[b"sec-fetch-mode"] == b"navigate"  # any other name: its last line
    once = [(b"user-agent", b"Mozilla/5.0"), [b"cookie", b"a=1"]]
    assert request_headers({"headers": iter(once)}) == {b"user-agent": b"Mozilla/5.0", b"cookie": b"a=1"}
    assert request_headers({}) == {}


# -- client resolution ---------------------------------------------------------------------------


def resolve(resolver: ClientResolver, peer: str, chain: bytes) -> str:
    return resolver.resolve({"client": (peer, 1), "headers": [(b"x-forwarded-for", chain)]}).key


def test_a_cached_chain_is_only_believed_from_a_trusted_proxy() -> None:
    resolver = ClientResolver(["10.0.0.0/8"])
    assert resolve(resolver, "10.0.0.1", b"192.0.2.7") == "192.0.2.7"
    assert resolve(resolver, "203.0.113.5", b"192.0.2.7") == "203.0.113.5"  # the same bytes, untrusted peer
    assert resolve(resolver, "10.0.0.1", b"192.0.2.7") == "192.0.2.7"
    assert resolve(resolver, "10.0.0.1", b"192.0.2.7 ") == "192.0.2.7"  # another spelling: read on its own
    assert resolve(resolver, "10.0.0.1", b"192.0.2.7, 10.0.0.9") == "192.0.2.7"
    # Another header configured (a reload builds a new resolver): the same bytes mean nothing there.
    other = ClientResolver(["10.0.0.0/8"], forwarded_header="forwarded")
    scope = {"client": ("10.0.0.1", 1), "headers": [(b"forwarded", b"192.0.2.7")]}
    assert other.resolve(scope).key == "unidentified-via-10.0.0.1"


def test_a_proxy_garbling_chains_is_noticed_on_cached_chains_too() -> None:
    resolver = ClientResolver(["10.0.0.0/8"])
    for _ in range(2):
        assert resolve(resolver, "10.0.0.1", b"junk") == "unidentified-via-10.0.0.1"
    assert resolver.unidentified_changes == 1
    assert resolve(resolver, "10.0.0.1", b"192.0.2.7") == "192.0.2.7"
    assert resolver.unidentified_changes == 2
    assert resolve(resolver, "10.0.0.1", b"junk") == "unidentified-via-10.0.0.1"  # cached as unusable
    assert resolver.unidentified_changes == 3


def test_long_chains_are_walked_each_time_and_never_kept() -> None:
    resolver = ClientResolver(["10.0.0.0/8"])
    chain = b"198.51.100.1, " * 100 + b"192.0.2.7"
    for _ in range(2):
        assert resolve(resolver, "10.0.0.1", chain) == "192.0.2.7"
    assert len(resolver._forwarded) == 0


# -- session reads -------------------------------------------------------------------------------


def scope(ip: str, user_agent: str, cookie_lines: list[bytes], path: str = "/tracks/7/stream") -> dict:
    headers = [(b"user-agent", user_agent.encode()), (b"x-forwarded-for", ip.encode())]
    return http_scope(path, "10.0.0.1", headers + [(b"cookie", line) for line in cookie_lines])


class Reader:
    """Sessions read the way the middleware reads them."""

    def __init__(self, keys: SessionKeys, clock: FakeClock, **changes) -> None:
        self.sessions = Sessions(replace(SessionSettings(), **changes), keys)
        self.resolver = ClientResolver(["10.0.0.0/8"])
        self.clock = clock

    def read(self, ip: str, user_agent: str, *cookie_lines: bytes):
        request = scope(ip, user_agent, list(cookie_lines))
        headers = request_headers(request)
        client = self.resolver.resolve(request, headers)
        return self.sessions.read(request, client, user_agent, self.clock(), headers)

    def token(self, ip: str, user_agent: str) -> bytes:
        """A session minted for this address and browser, as its Set-Cookie carries it."""
        reading = self.read(ip, user_agent)
        gate = self.sessions.gate
        session = gate.codec.new(self.clock(), reading.platform, reading.family, reading.tag, state="page")
        return gate.set_cookie(session, False, self.clock()).split(b";")[0]


def test_a_remembered_cookie_is_still_bound_to_its_network_device_and_lifetime() -> None:
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)
    for _ in range(2):  # the first read parses and verifies; the second is remembered
        assert reader.read("192.0.2.7", CHROME, cookie).session is not None
        assert reader.read("192.0.2.99", CHROME, cookie).session is not None  # the same /24
        other = reader.read("198.51.100.7", CHROME, cookie)  # another network: the session moves there
        assert other.session is not None and other.changed and other.session.net4 == other.tag
        device = reader.read("192.0.2.7", ANDROID, cookie)
        assert device.session is None and device.problem == "the session belongs to another device"
    clock.advance(SessionSettings().ttl)
    grace = reader.read("192.0.2.7", CHROME, cookie)  # past its life, within its grace: to be renewed
    assert grace.session is not None and grace.changed
    clock.advance(SessionSettings().grace)
    expired = reader.read("192.0.2.7", CHROME, cookie)
    assert expired.session is None and expired.problem == "the session has expired" and expired.lapsed


def test_an_empty_network_slot_is_filled_for_each_reader_and_the_check_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate_module, "VISITS", 16)
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)  # bound to its IPv4 /24, its IPv6 slot empty
    for _ in range(2):
        here = reader.read("192.0.2.7", CHROME, cookie)
        assert here.session is not None and not here.changed
        for network in ("2001:db8:1::5", "2001:db8:2::5"):  # either may fill the slot: the cookie is re-sent
            dual = reader.read(network, CHROME, cookie)
            assert dual.changed and dual.session is not None and dual.session.net6 == dual.tag
            assert dual.session.id == here.session.id and dual.session.net4 == here.session.net4
    for n in range(100):  # the token from a hundred networks: at most VISITS kept
        reader.read(f"198.51.{n}.7", CHROME, cookie)
        reader.read(f"2001:db8:{n:x}::1", CHROME, cookie)
    gate = reader.sessions.gate
    assert len(gate._visits) == 16
    assert reader.read("192.0.2.7", CHROME, cookie).session is not None


def test_junk_and_overlong_cookie_values_are_refused_and_never_make_big_keys() -> None:
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)
    forged = cookie[:-4] + (b"AAAA" if not cookie.endswith(b"AAAA") else b"BBBB")
    for _ in range(2):
        assert reader.read("192.0.2.7", CHROME, forged).problem == "the session cookie is not valid"
        assert reader.read("192.0.2.7", CHROME, forged, cookie).session is not None  # the next copy is tried
    long = b"guard_session=" + b"x" * 5000
    assert reader.read("192.0.2.7", CHROME, long).problem == "the session cookie is not valid"
    assert all(len(token) <= 400 for key in reader.sessions.gate._visits._data for token in key[0])


def test_a_lapsed_session_is_told_apart_on_remembered_reads() -> None:
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)  # a page loaded: state "page"
    reader.read("192.0.2.7", CHROME, cookie)
    reader.read("192.0.2.7", ANDROID, cookie)
    clock.advance(SessionSettings().ttl + 1)
    assert reader.read("192.0.2.7", CHROME, cookie).session is not None  # back after a night: renewed
    clock.advance(SessionSettings().grace)
    assert reader.read("192.0.2.7", CHROME, cookie).lapsed  # this browser, back after a week away
    assert not reader.read("192.0.2.7", ANDROID, cookie).lapsed  # a copy on another device is not


def test_new_keys_refuse_a_cookie_the_old_ones_remembered() -> None:
    clock = FakeClock()
    old = Reader(SessionKeys(KEY), clock)
    cookie = old.token("192.0.2.7", CHROME)
    assert old.read("192.0.2.7", CHROME, cookie).session is not None
    rolled = Reader(SessionKeys("n" * 40), clock)  # a reload with new keys builds new Sessions
    assert rolled.read("192.0.2.7", CHROME, cookie).problem == "the session cookie is not valid"
    assert Reader(SessionKeys("n" * 40, previous=KEY), clock).read("192.0.2.7", CHROME, cookie).session is not None


def test_cookie_headers_on_several_lines_and_among_other_cookies() -> None:
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)
    session = reader.read("192.0.2.7", CHROME, cookie).session
    assert session is not None
    assert reader.read("192.0.2.7", CHROME, b"_ga=1", cookie, b"theme=dark").session == session  # HTTP/2
    assert reader.read("192.0.2.7", CHROME, b"_ga=1; " + cookie + b"; theme=dark").session == session
    junk = b"guard_session=junk"
    assert reader.read("192.0.2.7", CHROME, junk, cookie).session == session  # the first valid copy
    assert reader.read("192.0.2.7", CHROME, b"; ".join([junk] * 4 + [cookie])).session is None  # at most four tried
    assert reader.read("192.0.2.7", CHROME, b"guardsession=x; " + cookie[1:]).session is None


def test_the_cookie_cache_is_bounded_and_skips_long_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "COOKIE_LINES", 8)
    clock = FakeClock()
    reader = Reader(SessionKeys(KEY), clock)
    cookie = reader.token("192.0.2.7", CHROME)
    for n in range(100):  # a scraper sending a new Cookie header each time
        assert reader.read("192.0.2.7", CHROME, b"x=%d; " % n + cookie).session is not None
    assert len(reader.sessions.gate._cookies) == 8
    long = b"pad=" + b"x" * gate_module.MAX_COOKIE_LINE + b"; " + cookie
    assert reader.read("192.0.2.7", CHROME, long).session is not None
    assert long not in reader.sessions.gate._cookies._data


def test_a_token_just_signed_reads_back_as_verifying_it_would() -> None:
    codec = Reader(SessionKeys(KEY), FakeClock()).sessions.gate.codec
    session = Session("abc", 1_800_000_000.75, "page", 1_800_000_099.5, "t4", "", "windows")
    token = codec.dumps(session)
    assert codec._verified.peek(token) == codec._verify(token)
    assert codec.loads(token) == replace(session, issued_at=1_800_000_000.0, proven_until=1_800_000_099.0)


# -- metrics -------------------------------------------------------------------------------------


def test_decision_metrics_read_as_prometheus_client_s_own_counter_and_histogram() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from guard.identity.identify import Identity
    from guard.ops.observe import LATENCY_BUCKETS, Observer
    from guard.policy.engine import ALLOW, Decision, Facts
    from guard.policy.rules import Match, Rule

    observer = Observer()
    native = CollectorRegistry()
    decisions = Counter("guard_decisions", "guard decisions", ["action", "category", "rule", "shadow"], registry=native)
    latency = Histogram(
        "guard_check_seconds", "time the guard spends per checked request", buckets=LATENCY_BUCKETS, registry=native
    )
    client = ClientResolver().resolve({"client": ("192.0.2.1", 1)})
    facts = Facts(client, Identity("unknown", None, None), "/tracks/7", PathMatch("pages", "7", "7"))
    sprint = Rule(id="track-sprint", match=Match(), action="throttle")
    shadow = Rule(id="probe", match=Match(), action="block", shadow=True)
    cases = [
        (ALLOW, 3e-6, False),
        (ALLOW, 5e-6, False),  # on a bound: in that bucket
        (ALLOW, 0.5, False),  # above every bound: +Inf only
        (Decision("throttle", sprint, "limit exceeded"), 2e-5, False),
        (Decision("allow", shadowed=((shadow, "would block"),)), 1e-4, False),
        (Decision("throttle", sprint, "limit exceeded"), 7e-4, True),
    ]
    for decision, seconds, shadowed in cases:
        observer.record(facts, decision, seconds, shadow=shadowed)
        latency.observe(seconds)
        labels = (decision.action, "unknown", decision.rule_id or "-", "true" if shadowed else "false")
        decisions.labels(*labels).inc()
        for rule, _ in decision.shadowed:
            decisions.labels(rule.action, "unknown", rule.id, "true").inc()

    def samples(registry: CollectorRegistry) -> set[str]:
        """The exposition's lines; a creation time's value left out (the two were created apart)."""
        lines = generate_latest(registry).decode().splitlines()
        return {line.rsplit(" ", 1)[0] if "_created{" in line or "_created " in line else line for line in lines}

    assert samples(observer.registry) == samples(native)


# -- the response ----------------------------------------------------------------------------------

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def test_response_signals_are_added_to_a_copy_of_each_start_message() -> None:
    import asyncio

    from guard.middleware import GuardMiddleware

    async def app(scope, receive, send) -> None:
        await send(START)  # the same dict every time, as some applications do
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": part != b"c"})

    middleware = GuardMiddleware(app, RULES, clock=FakeClock(), reload_interval=0)

    async def get() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        request = http_scope("/about", "192.0.2.1", [(b"user-agent", CHROME.encode())])
        await middleware(request, receive, send)
        return sent

    for _ in range(2):
        sent = asyncio.run(get())
        names = [name for name, _ in sent[0]["headers"]]
        assert names.count(b"x-robots-tag") == 1 and names[0] == b"content-type"
        assert [m["body"] for m in sent[1:]] == [b"a", b"b", b"c"]
    assert START["headers"] == [(b"content-type", b"text/plain")]


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=24),
        st.from_regex(r"[0-9]{1,20}", fullmatch=True),
        st.sampled_from(["\u0667", "\u00b2", "0", "7", "1\u0667"]),
    )
)
def test_plain_track_ids_are_told_as_the_pattern_tells_them(raw: str) -> None:
    from guard.policy.tracks import _PLAIN, plain

    assert plain(raw) == bool(_PLAIN.fullmatch(raw))
