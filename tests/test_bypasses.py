"""The red team's ways past the guard, each replayed through uvicorn and a real HTTP client.

Every test here is an attack that once worked against ``guard demo`` (or a listener it
once hurt), now stopped. The platform behind the guard is the deliberately permissive
one (any spelling ``int()`` reads is a track): the guard must hold in front of apps it
does not know.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import (
    CHROME,
    NAVIGATE,
    FakeClock,
    Visitor,
    browser_get,
    browser_user_agents,
    run,
    serving,
    solve_challenge,
)

from guard.demo.app import create_app, platform
from guard.middleware import GuardMiddleware
from guard.policy.tracks import MAX_TRACK_ID, canonicaliser, track_int

PROXY = "127.0.0.1/32"  # the test client stands in for the platform's reverse proxy


def permissive_app(policy, clock: FakeClock, **options):
    return create_app(policy, clock=clock, permissive=True, reload_interval=0, **options)


def fetch_all(base: str, paths: list[str], clock: FakeClock, step: float, headers=None) -> list[httpx.Response]:
    """GET each path in turn as a browser (audio after its player's page), the clock moving
    ``step`` seconds between requests."""
    out = []
    with httpx.Client(base_url=base, headers={"user-agent": CHROME, **(headers or {})}) as client:
        for path in paths:
            out.append(browser_get(client, path))
            clock.advance(step)
    return out


# -- finding 1: track spellings ------------------------------------------------------------------


def test_padded_ids_no_longer_share_one_bucket(policy) -> None:
    """Was: 80-character zero-padded ids all fell into one 64-zero bucket; 800 tracks in 90 s."""
    clock = FakeClock()
    with serving(permissive_app(policy, clock)) as base:
        paths = [f"/tracks/{str(n).zfill(80)}/stream" for n in range(1, 801)]
        assert len(paths[41].split("/")[2]) == 80
        replies = fetch_all(base, paths, clock, step=0.11)  # ~9 requests a second for 90 s
    served = [r for r in replies if r.status_code == 200]
    assert served[0].headers["content-type"] == "audio/mpeg"  # the permissive app does serve them
    assert len(served) == 40  # track-sprint: 40 distinct tracks a minute, then throttled...
    assert replies[-1].status_code == 403 and "banned" in replies[-1].text  # ...and banned


def test_a_listener_replaying_one_track_under_many_spellings_is_never_stopped(policy) -> None:
    """Was: 40 spellings of track 7 used up a fresh listener's 40-track budget."""
    clock = FakeClock()
    spellings = ["7", "07", "+7", "0_7", "%207", "7%20", "%2B7", "%37", "\u0667", "\uff17", "\U0001d7d5", "0\u096d"]
    spellings += ["0" * k + "7" for k in range(2, 40)] + ["+" + "0_" * k + "7" for k in range(1, 20)]
    with serving(permissive_app(policy, clock)) as base:
        replies = fetch_all(base, [f"/tracks/{s}/stream" for s in spellings] * 2, clock, step=0.5)
    assert [r.status_code for r in replies] == [200] * len(replies)
    assert len({r.headers["content-length"] for r in replies}) == 1  # one track, every time


# The digits Python's int() reads, grouped by value: ASCII, Arabic-Indic, Devanagari, fullwidth, ...
DIGITS: dict[int, list[str]] = {value: [] for value in range(10)}
for _code in range(0x20000):
    _value = unicodedata.decimal(chr(_code), None)
    if _value is not None:
        DIGITS[_value].append(chr(_code))


@st.composite
def spelling(draw) -> tuple[int, str]:
    """A track number and one way of writing it that a permissive app might accept."""
    n = draw(st.integers(1, 100_000))
    digits = "0" * draw(st.integers(0, 90)) + str(n)
    chars = [draw(st.sampled_from(DIGITS[int(d)])) if draw(st.booleans()) else d for d in digits]
    text = chars[0]
    for char in chars[1:]:
        text += ("_" if draw(st.integers(0, 4)) == 0 else "") + char
    text = draw(st.sampled_from(["", "+", "-"])) + text
    blanks = st.text(alphabet=" \t\u00a0\u2003\u3000\x0b\x0c", max_size=3)
    return n, draw(blanks) + text + draw(blanks)


PERMISSIVE = platform(permissive=True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(spelling())
def test_any_spelling_the_permissive_app_reads_as_n_is_counted_as_n(policy, case: tuple[int, str]) -> None:
    n, text = case
    reply = run(Visitor(PERMISSIVE, "198.51.100.80").get("/api/tracks/" + quote(text, safe="")))
    if reply.status_code != 200:
        return  # the app does not serve it (a sign it rejects, or not a track): nothing to count
    assert reply.json()["id"] == n
    for path in (f"/api/tracks/{text}", f"/tracks/{text}/stream", f"/tracks/{text}"):
        assert policy.paths.classify(path).track == str(n), path


@pytest.mark.parametrize(
    ("raw", "counted"),
    [
        ("42", "42"),
        ("0042", "42"),
        (" +4_2 ", "42"),
        ("%2042", "42"),  # left encoded by the server: decoded once more
        ("%252042", "42"),
        ("\u0664\u0662", "42"),  # Arabic-Indic
        ("\uff14\uff12", "42"),  # fullwidth (NFKC)
        ("0" * 5000 + "42", "42"),  # no int() of five thousand digits: linear
        ("-0", "0"),
        ("4__2", "4__2"),  # int() refuses it: counted as the text it is
        ("_42", "_42"),
        ("abc", "abc"),
    ],
)
def test_integer_track_ids_are_canonical(raw: str, counted: str) -> None:
    assert canonicaliser("int")(raw) == counted


def test_long_ids_are_hashed_whole_never_cut_into_a_shared_bucket() -> None:
    int_id, str_id = canonicaliser("int"), canonicaliser("str")
    long_a, long_b = "9" * 100 + "1", "9" * 100 + "2"
    assert int_id(long_a) != int_id(long_b)
    assert int_id(long_a).startswith("#") and len(int_id(long_a)) == 33
    assert str_id("x" * 65) != str_id("x" * 66) and len(str_id("x" * 65)) <= MAX_TRACK_ID
    assert str_id("a\nb").startswith("#") and str_id("") != ""  # one line, never the empty "no track"
    assert str_id(" Caf\u00e9 ") == str_id("Cafe\u0301") == "Caf\u00e9"  # NFKC, whitespace
    assert str_id("007") == "007" and track_int("007") == "7"  # str keeps what int folds


# -- finding 2: a client-sent Forwarded header ----------------------------------------------------


def test_a_client_added_forwarded_header_is_ignored(policy) -> None:
    """Was: behind a proxy appending X-Forwarded-For, ``Forwarded: for=<anything>`` named the client."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    with serving(app) as base, httpx.Client(base_url=base, headers={"user-agent": CHROME}) as client:
        statuses = []
        for n in range(1, 121):
            headers = {"forwarded": f"for=198.51.100.{n}", "x-forwarded-for": "203.0.113.7"}
            statuses.append(client.get(f"/api/tracks/{n}", headers=headers).status_code)
            clock.advance(0.2)
    assert statuses.count(200) == 40  # one client, whatever it claims to be


# -- finding 3: long and malformed chains ---------------------------------------------------------

CHAINS = {
    "33 entries": ", ".join(f"192.0.2.{n}" for n in range(1, 33)),
    "empty entry": "198.51.100.1, , ",
    "unknown": "unknown",
    "by-only": "by=10.0.0.1",
    "zone id": "fe80::1%eth0, [fe80::2%25en0]",
    "junk": ";;,,,[::1, _hidden, 999.1.1.1, 127.1",
}


@pytest.mark.parametrize("junk", list(CHAINS.values()), ids=list(CHAINS))
def test_garbage_left_of_the_client_changes_nothing(policy, junk: str) -> None:
    """Was: a chain of 33 entries, or with an empty, unknown, by=-only or zone-id entry, made the
    proxy the client: everybody lumped under the proxy, and a banned client freed."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    with serving(app) as base:
        real = {"x-forwarded-for": "203.0.113.8"}
        replies = fetch_all(base, [f"/api/tracks/{n}" for n in range(1, 80)], clock, 0.1, real)
        banned = replies[-1]
        assert banned.status_code == 403 and "banned" in banned.text
        # The proxy appends the real address after whatever the client wrote.
        garbled = {"x-forwarded-for": f"{junk}, 203.0.113.8"}
        again = fetch_all(base, ["/api/tracks/500"], clock, 0, garbled)[0]
        assert again.status_code == 403 and again.headers["retry-after"] == banned.headers["retry-after"]
        # Someone else behind the same proxy, with the same garbage, is a different client.
        other = fetch_all(base, ["/api/tracks/500"], clock, 0, {"x-forwarded-for": f"{junk}, 203.0.113.9"})[0]
        assert other.status_code == 200


def test_a_chain_naming_no_usable_client_shares_one_strict_bucket(policy, caplog) -> None:
    """If the proxy's own entry is unusable, the request is not the proxy's: one shared bucket,
    whatever the User-Agent, and one log line for the change of state."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    uas = browser_user_agents()
    with serving(app) as base, httpx.Client(base_url=base) as client:
        statuses = []
        for n in range(1, 61):
            headers = {"x-forwarded-for": "unknown", "user-agent": uas[n % 10]}
            statuses.append(client.get(f"/api/tracks/{n}", headers=headers).status_code)
        fine = client.get("/api/tracks/1", headers={"x-forwarded-for": "203.0.113.10", "user-agent": CHROME})
    assert statuses.count(200) == 40  # ten User-Agents, one budget
    assert fine.status_code == 200  # the proxy itself (and everyone identified) is unaffected
    lines = [r.getMessage() for r in caplog.records if "usable client" in r.getMessage()]
    assert len(lines) == 2  # started sending unusable chains; sends usable ones again


def test_the_demo_routes_only_canonical_ids(policy) -> None:
    app = create_app(policy, clock=FakeClock(), reload_interval=0)
    statuses = [run(Visitor(app, "198.51.100.81").get(f"/tracks/{s}/stream")).status_code for s in ("7", "07", "+7")]
    assert statuses == [200, 404, 404]


def test_typed_placeholders_and_a_registered_normaliser(tmp_path) -> None:
    from support import RULES

    from guard.errors import ConfigError
    from guard.policy.rules import load_rules

    (tmp_path / "agents.yaml").write_text((RULES.parent / "agents.yaml").read_text())
    (tmp_path / "ai-robots.json").write_text((RULES.parent / "ai-robots.json").read_text())
    (tmp_path / "crawler-lists.json").write_text((RULES.parent / "crawler-lists.json").read_text())
    rules = tmp_path / "rules.yaml"
    template = "version: 1\npaths:\n  a: ['/ids/{{track:str}}']\n  b: ['/slugs/{{track:{kind}}}']\nrules: []\n"
    rules.write_text(template.format(kind="slug_test"))
    with pytest.raises(ConfigError, match=r"rules.yaml:4:.*unknown track type 'slug_test'"):
        load_rules(rules)
    GuardMiddleware(platform(), RULES, reload_interval=0, track_types={"slug_test": lambda t: t.lower().strip("-")})
    policy = load_rules(rules)
    assert policy.paths.classify("/ids/007").track == "007"
    assert policy.paths.classify("/slugs/-Blue-River-").track == "blue-river"


# -- finding 4: bans that lifted with a new User-Agent or the next address ------------------------

UAS = browser_user_agents()


def solve_if_challenged(client: httpx.Client, reply: httpx.Response, path: str, headers: dict[str, str]) -> bool:
    """A scraper that solves every challenge: when ``reply`` asks for one (429 or 401 with one line),
    it loads ``path`` as a page, solves the proof of work and takes the session it sets."""
    if reply.status_code not in (401, 429) or "open this site's page in a browser" not in reply.text:
        return False
    page = client.get(path, headers={**headers, **NAVIGATE})
    assert client.get(solve_challenge(page), headers={**headers, **NAVIGATE}).status_code == 303
    return True


def provoke(client: httpx.Client, clock: FakeClock, rule: str, headers: dict[str, str]) -> httpx.Response:
    """Misbehave the way ``rule`` notices until it bans; returns the banning response.

    The scraper is a browser: it loads a page first (its session), and solves the challenge
    session-tracks-soft gives it at 120 tracks an hour (before track-hoarding's 150 in ten
    minutes), so what stops it is the ban.
    """
    assert client.get("/", headers={**headers, **NAVIGATE}).status_code == 200
    if rule == "track-sprint":  # many tracks fast
        paths, step = (f"/api/tracks/{n}" for n in range(1, 1000)), 0.05
    elif rule == "track-hoarding":  # just under the per-minute pace, for ten minutes
        paths, step = (f"/api/tracks/{n}" for n in range(1, 1000)), 1.6
    else:  # request-rate: one track, over and over
        paths, step = ("/api/tracks/1" for _ in range(1000)), 0.0
    for path in paths:
        clock.advance(step)
        reply = client.get(path, headers=headers)
        if solve_if_challenged(client, reply, path.replace("/api", ""), headers):
            reply = client.get(path, headers=headers)
        if reply.status_code == 403:
            assert rule in reply.text and "banned" in reply.text
            return reply
    raise AssertionError("never banned")


@pytest.mark.parametrize("rule", ["track-sprint", "track-hoarding", "request-rate"])
def test_a_banned_client_stays_banned_whatever_it_changes(policy, rule: str) -> None:
    """Was: bans keyed on address + User-Agent lifted with a new User-Agent (and, through a
    proxy, with a garbled X-Forwarded-For or an added Forwarded header)."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    home = {"x-forwarded-for": "203.0.113.20"}
    with serving(app) as base, httpx.Client(base_url=base) as client, httpx.Client(base_url=base) as next_door:
        # Another household on the same /24 listened before, and listens after.
        neighbour = {"x-forwarded-for": "203.0.113.21", "user-agent": UAS[0]}
        assert browser_get(next_door, "/tracks/3/stream", headers=neighbour).status_code == 200
        banned = provoke(client, clock, rule, {**home, "user-agent": UAS[0]})
        horizon = banned.headers["retry-after"]
        tricks = [
            {**home, "user-agent": UAS[1]},
            {**home, "user-agent": UAS[2] + " Extra/1.0"},
            {"x-forwarded-for": "unknown, , _x, fe80::1%eth0, 203.0.113.20", "user-agent": UAS[0]},
            {"x-forwarded-for": ", ".join(["198.51.100.9"] * 40 + ["203.0.113.20"]), "user-agent": UAS[0]},
            {**home, "forwarded": "for=198.51.100.77", "user-agent": UAS[0]},
            {**home, "forwarded": "for=198.51.100.78", "x-real-ip": "198.51.100.79", "user-agent": UAS[3]},
        ]
        for headers in tricks:
            # Each trick keeps the scraper's cookies; one naming another device has no session
            # there, so it solves the challenge for a new one: the ban still answers.
            with httpx.Client(base_url=base, cookies=client.cookies) as scraper:
                for path in ("/api/tracks/77777", "/tracks/1/stream"):
                    again = scraper.get(path, headers=headers)
                    if solve_if_challenged(scraper, again, path, headers):
                        again = scraper.get(path, headers=headers)
                    assert again.status_code == 403, (headers, path, again.text)
                    assert again.headers["retry-after"] == horizon, (headers, path)
        assert next_door.get("/tracks/4/stream", headers=neighbour).status_code == 200


@contextmanager
def browsers(base: str) -> Iterator[Callable[[dict[str, str]], httpx.Client]]:
    """The client of each device (an address and a User-Agent): every browser keeps its own
    cookies, so two devices never share a session."""
    clients: dict[tuple[str, str], httpx.Client] = {}

    def of(device: dict[str, str]) -> httpx.Client:
        key = (device["x-forwarded-for"], device["user-agent"])
        if key not in clients:
            clients[key] = httpx.Client(base_url=base)
        return clients[key]

    try:
        yield of
    finally:
        for client in clients.values():
            client.close()


def test_moving_through_the_subnet_ends_in_a_subnet_ban(policy) -> None:
    """Was: the address-tracks ban was escaped by moving to the next address of the /24, and
    subnet-tracks never banned. Two misbehaving User-Agents ban an address; three banned
    addresses ban the /24 (for a quarter of the time)."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    served = 0
    with serving(app) as base, browsers(base) as client:
        other_subnet = {"x-forwarded-for": "198.51.100.5", "user-agent": UAS[0]}
        for n in range(1, 6):
            address = f"203.0.113.{n}"
            devices = [{"x-forwarded-for": address, "user-agent": ua} for ua in UAS[:2]]
            first = [client(d).get("/", headers=d).status_code for d in devices]  # both seen before
            if first != [200, 200]:
                break
            for device in devices:
                for track in range(1, 200):
                    reply = client(device).get(f"/api/tracks/{n * 1000 + track}", headers=device)
                    clock.advance(0.05)
                    served += reply.status_code == 200
                    if reply.status_code == 403:
                        break
        assert n == 4  # the fourth address of the /24 is refused at once
        assert served == 3 * 2 * 40
        assert client(other_subnet).get("/api/tracks/1", headers=other_subnet).status_code == 200


def test_rotating_single_user_agents_through_the_subnet_ends_in_a_subnet_ban(policy) -> None:
    """One fresh address per 40 tracks: subnet-tracks throttles at 1000 and now bans."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    statuses = []
    with serving(app) as base, httpx.Client(base_url=base, headers={"user-agent": UAS[0]}) as client:
        for n in range(1, 1401):
            address = f"203.0.113.{n // 40 + 1}"
            if n % 40 == 0:
                # A new cookie jar with each address: one session kept across the /24 would
                # tie the addresses together (session-tracks-soft stops it at 120 tracks).
                client.cookies.clear()
            statuses.append(client.get(f"/api/tracks/{n}", headers={"x-forwarded-for": address}).status_code)
            clock.advance(0.05)
        late = client.get("/api/tracks/1", headers={"x-forwarded-for": "203.0.113.250"})
    assert statuses.count(200) == 1000
    assert late.status_code == 403 and "subnet-tracks" in late.text and "banned" in late.text


def test_user_agents_warmed_up_before_scraping_buy_two_bans_then_the_address_is_held(policy) -> None:
    """Harder: a scraper that shows ten User-Agents on its address first (so none is new when
    its first ban starts) gets two bans' worth of tracks; then the address is banned."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    served = 0
    with serving(app) as base, browsers(base) as client:
        devices = [{"x-forwarded-for": "203.0.113.60", "user-agent": ua} for ua in UAS[:10]]
        for device in devices:
            assert client(device).get("/", headers=device).status_code == 200
        clock.advance(3600)
        for n, device in enumerate(devices):
            for track in range(1, 100):
                reply = client(device).get(f"/api/tracks/{n * 1000 + track}", headers=device)
                clock.advance(0.05)
                served += reply.status_code == 200
                if reply.status_code == 403:
                    break
    assert served == 2 * 40


def test_round_robin_user_agents_are_stopped_by_the_address_limits_and_bans(policy) -> None:
    """Harder: ten warmed-up User-Agents taking turns, each under its own per-minute limit."""
    clock = FakeClock()
    app = permissive_app(policy, clock, trusted_proxies=[PROXY])
    statuses = []
    with serving(app) as base, browsers(base) as client:
        devices = [{"x-forwarded-for": "203.0.113.61", "user-agent": ua} for ua in UAS[:10]]
        for device in devices:
            client(device).get("/", headers=device)
        clock.advance(3600)
        for n in range(1, 2001):
            device = devices[n % 10]
            statuses.append(client(device).get(f"/api/tracks/{n}", headers=device).status_code)
            clock.advance(0.1)
    assert statuses.count(200) <= 400  # ten User-Agents' first minute at most
    assert statuses[-100:] == [403] * 100
