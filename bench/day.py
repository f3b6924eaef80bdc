"""One day of traffic through GuardMiddleware, in process, with an injected clock.

Usage: python bench/day.py [--rules rules/default.yaml] [--hours 24] [--seed 1] [--save | --out FILE]

The same ``--seed`` gives the same figures, to the request: the run's randomness (its
actors, the guard's session ids and nonces, string hashing) all comes from the seed.

People (none of them may be stopped):
  * 300 households, each 1-3 listening sessions a day of 5-25 tracks; 30% skip every
    8-25 s for part of a session; every track is its page, its metadata and 2-4 Range
    requests for the audio. A household's browser keeps its cookies.
  * an office: 30 people behind one address, listening through an 8-hour day;
  * a carrier: 150 people over 16 addresses of one /24 (carrier-grade NAT);
  * a family: 4 iPhones with byte-identical User-Agents behind one address;
  * device listeners: 60 households whose browsers are drawn from the diverse corpora of
    real User-Agents in tests/data (in-app browsers, TVs, consoles, e-readers, feature
    phones, car browsers, older engines), not only mainstream desktop browsers;
  * single-page-app listeners: 40 people who load one page, then play track after track
    for hours through the API and audio alone (same-origin fetches, no navigation);
  * commuters: 40 phones that leave home Wi-Fi for the carrier's network (another /24,
    or IPv6) in the middle of a track, and come back in the evening.
Scrapers, each running all day with a browser User-Agent, honouring Retry-After (it
waits, then tries the same track again) and skipping a track on 403:
  * one address, 1 track every 10 s, keeping its cookies / without cookies;
  * one address, a new browser User-Agent every track, 1 track every 3 s;
  * addresses rotating inside one /24, 1 track/s; across one IPv6 /48, 1 track/s;
  * a pool of 5,000 /24s, 2 tracks/s (data-centre addresses, and residential ones);
  * a headless-browser farm: each track from a fresh /24 with a fresh cookie jar, page
    first, 1 track every 2 s (data-centre addresses, and residential ones);
  * one address keeping its session until it is held up for more than ten minutes or
    refused, then taking a new one (with one User-Agent, and with a new one every track).
Rotating scrapers are run twice where it matters: keeping one session, and taking a new
session for every track (what rotating sessions costs is then the sessions minted).
Scrapers with a cookie jar are patient: refused audio, they load the track's page as a
browser does and solve its challenge if it is one (at a low difficulty, to keep the run
short; the number of challenges is reported, each worth 2^16 SHA-256 at the shipped one).

Prints and saves, per scraper, the distinct tracks whose audio it obtained, the requests
it made, the sessions it used and the challenges it solved; per group of people, how many
were stopped (any 401, 402, 403 or 429, a challenge included) and how many of their
requests were refused, and the targets beside them (``--save``: bench/results/day.json,
the figures the README quotes).

Sessions are the guard's own, as the rules say (docs/sessions.md): pages
issue a signed session cookie, within the minting limits per address and subnet; audio
requires one (401 without). Browsers keep their cookies; a scraper "keeping cookies"
keeps its jar, and on a 401 loads the track's page to get a session and tries again;
"a new session every track" empties its jar before each track; "no cookies" never sends
one. ``--no-sessions`` runs the same day with sessions off (every counter then keys
sessions by address and User-Agent).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard.identity.ranges import HostingRanges  # noqa: E402
from guard.middleware import GuardMiddleware  # noqa: E402
from guard.pacing import Pacer  # noqa: E402
from guard.sessions.challenge import solves  # noqa: E402
from guard.testing import http_scope  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import saving  # noqa: E402

DAY = 86400.0
START = 1_800_057_600.0  # a midnight, UTC
CATALOGUE = 100_000
TARGETS = {"single address": 300, "rotation": 1000, "browser farm": 2000, "people stopped": 0}

BROWSERS = [line for line in (ROOT / "tests" / "data" / "browser_user_agents.txt").read_text().splitlines() if line]
BROWSERS = [ua for ua in BROWSERS if not ua.startswith("#")]
#: Corpora of people's devices (in-app browsers, TVs, consoles, e-readers, ...).
DEVICE_CORPORA = [
    "tests/data/corpora/dd_desktop_mobile.txt",
    "tests/data/corpora/dd_tv_console_car.txt",
    "tests/data/corpora/dd_apps.txt",
]
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.6.1 Mobile/15E148 Safari/604.1"
)

# -- requests ---------------------------------------------------------------------------------


Jar = dict[str, str]  # a cookie jar: {"cookie": the guard's session cookie}, empty when none yet


async def not_waiting(seconds: float) -> None:
    """The pacer's wait in a simulated day: the actors' own clock, not the wall's."""


@dataclass
class Request:
    ip: str
    path: str
    ua: str
    jar: Jar | None = None  # None: sends no cookies, keeps none
    range_header: str | None = None
    navigate: bool = False  # a page load (a document); else the page's own fetch (audio, API)
    api: bool = False  # a single-page app's fetch() of its API (same-origin, cors)


@dataclass
class Answer:
    status: int
    retry_after: float = 0.0
    cookie: str | None = None  # the session cookie the response set
    challenge: dict | None = None  # the challenge page's configuration, when it is one


class Day:
    """Runs actors (generators of requests and waits) in time order against the middleware."""

    def __init__(self, middleware: GuardMiddleware, clock: list[float]) -> None:
        self.middleware = middleware
        self.clock = clock
        self.queue: list[tuple[float, int, Generator]] = []
        self.count = itertools.count()
        self.requests = 0

    def start(self, at: float, actor: Generator) -> None:
        heapq.heappush(self.queue, (at, next(self.count), actor))

    async def send(self, request: Request) -> Answer:
        metadata = NAVIGATE if request.navigate else API_FETCH if request.api else FETCH
        headers = [(b"user-agent", request.ua.encode()), *metadata]
        if request.jar and "cookie" in request.jar:
            headers.append((b"cookie", request.jar["cookie"].encode()))
        if request.range_header:
            headers.append((b"range", request.range_header.encode()))
        path, _, query = request.path.partition("?")
        scope = http_scope(path, request.ip, headers, scheme="https", port=443)
        scope["query_string"] = query.encode()
        answer = Answer(0)
        body = bytearray()

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"retry-after":
                        answer.retry_after = float(value)
                    elif key == b"set-cookie":
                        answer.cookie = value.decode().split(";", 1)[0]
            elif answer.status == 403:
                body.extend(message.get("body", b""))

        await self.middleware(scope, receive, send)
        found = re.search(rb"var C = (\{.*?\});", body)
        if found:
            answer.challenge = json.loads(found.group(1))
        if answer.cookie and request.jar is not None:
            request.jar["cookie"] = answer.cookie
        self.requests += 1
        return answer

    async def run(self, until: float) -> None:
        while self.queue:
            at, _, actor = heapq.heappop(self.queue)
            if at >= until:
                break
            self.clock[0] = at
            answer: Answer | None = None
            try:
                step = actor.send(None)
                while isinstance(step, Request):
                    answer = await self.send(step)
                    step = actor.send(answer)
            except StopIteration:
                continue
            heapq.heappush(self.queue, (at + max(0.001, float(step)), next(self.count), actor))


NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"sec-fetch-dest", b"document"), (b"accept", b"text/html,*/*;q=0.8")]
FETCH = [(b"sec-fetch-mode", b"no-cors"), (b"accept", b"*/*")]
# What a single-page app's own fetch() of its API sends.
API_FETCH = [
    (b"sec-fetch-mode", b"cors"),
    (b"sec-fetch-site", b"same-origin"),
    (b"sec-fetch-dest", b"empty"),
    (b"accept", b"application/json"),
]


async def app(scope, receive, send) -> None:
    """The platform behind the guard: answers at once (its own cost is not what is measured)."""
    status = 206 if any(k == b"range" for k, _ in scope["headers"]) else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


# -- people -----------------------------------------------------------------------------------


@dataclass
class Person:
    group: str
    refused: int = 0
    requests: int = 0
    tracks: set[int] = field(default_factory=set)


REFUSED = (401, 402, 403, 429)  # for a person, any of these (a challenge included) is being stopped


def pick_track(rng: random.Random, favourites: list[int]) -> int:
    # A listener comes back to favourites (30%), plays what is popular (20%: the top 1,000)
    # and otherwise anything in the catalogue.
    draw = rng.random()
    if favourites and draw < 0.3:
        return rng.choice(favourites)
    if draw < 0.5:
        return rng.randint(1, 1000)
    return rng.randint(1, CATALOGUE)


def ask(person: Person, request: Request) -> Generator:
    """One request of a person's, counted; its answer."""
    answer = yield request
    person.requests += 1
    person.refused += answer.status in REFUSED
    return answer


def listen(
    person: Person,
    rng: random.Random,
    address: Callable[[], str],
    ua: str,
    jar: Jar,
    tracks: int,
    skipping: bool,
    spa: bool = False,
) -> Generator:
    """One listening session: per track its page, metadata and 2-4 Range requests over its length.

    ``address()`` is where each request leaves from (a phone changing network mid-track gives
    another one). A single-page app (``spa``) loads no page per track: its own fetch() of the
    API, then the audio.
    """
    favourites = [pick_track(rng, []) for _ in range(30)]
    skip_until = rng.randint(0, tracks) if skipping else 0
    for n in range(tracks):
        track = pick_track(rng, favourites)
        length = rng.uniform(150, 300)
        played = rng.uniform(8, 25) if n < skip_until else length
        pages = (f"/api/tracks/{track}",) if spa else (f"/tracks/{track}", f"/api/tracks/{track}")
        for path in pages:
            navigate = not path.startswith("/api/")
            yield from ask(person, Request(address(), path, ua, jar, navigate=navigate, api=spa))
        ranges = rng.randint(2, 4)
        for r in range(ranges):
            request = Request(address(), f"/tracks/{track}/stream", ua, jar, f"bytes={r * 65536}-")
            answer = yield from ask(person, request)
            if answer.status == 206:
                person.tracks.add(track)
            yield played / ranges
        yield rng.uniform(0.5, 3)


def household_day(
    person: Person, rng: random.Random, now: list[float], ip: str | list[str], uas: list[str]
) -> Generator:
    """1-3 listening sessions between 07:00 and 23:00, each on one of the household's devices."""
    skipper = rng.random() < 0.3
    jars: list[Jar] = [{} for _ in uas]  # each device's browser keeps its cookies
    for start in sorted(rng.uniform(7, 23) * 3600 for _ in range(rng.randint(1, 3))):
        wait = START + start - now[0]
        if wait > 0:
            yield wait
        device = rng.randrange(len(uas))
        # Behind a carrier NAT a session's flows leave from one address of the pool, as RFC 4787
        # and RFC 6888 ask ("paired" pooling); the next session may get another one.
        address = ip if isinstance(ip, str) else rng.choice(ip)
        yield from listen(person, rng, lambda a=address: a, uas[device], jars[device], rng.randint(5, 25), skipper)


def office_worker(person: Person, rng: random.Random, now: list[float], ip: str, ua: str) -> Generator:
    """Listens from about 09:00 to 17:00: sessions of 5-25 tracks with short breaks between."""
    yield rng.uniform(8.5, 9.5) * 3600
    end = START + 17 * 3600 + rng.uniform(0, 1800)
    jar: Jar = {}
    while now[0] < end:
        yield from listen(person, rng, lambda: ip, ua, jar, rng.randint(5, 25), rng.random() < 0.3)
        yield rng.uniform(60, 900)


def spa_listener(person: Person, rng: random.Random, now: list[float], ip: str, ua: str) -> Generator:
    """Opens the web player once, then plays track after track for 2-10 hours through its API and
    audio alone: no further navigation (a single-page app, or a tab left open)."""
    yield rng.uniform(7, 14) * 3600
    end = now[0] + rng.uniform(2, 10) * 3600
    jar: Jar = {}
    yield from ask(person, Request(ip, f"/tracks/{pick_track(rng, [])}", ua, jar, navigate=True))
    while now[0] < end:
        yield from listen(person, rng, lambda: ip, ua, jar, rng.randint(5, 25), rng.random() < 0.3, spa=True)
        yield rng.uniform(5, 600)  # a pause: the tab stays open


def commuter_day(
    person: Person, rng: random.Random, now: list[float], home: str, carrier: Callable[[], str], ua: str
) -> Generator:
    """A phone that starts listening on home Wi-Fi, walks out mid-track onto the carrier's network
    (another /24, or IPv6 on a dual-stack carrier, the address changing between flows), and plays
    again at home in the evening, keeping its cookies throughout."""
    jar: Jar = {}
    yield rng.uniform(7, 8.5) * 3600
    leaves = now[0] + rng.uniform(60, 900)  # in the middle of some track
    yield from listen(person, rng, lambda: home if now[0] < leaves else carrier(), ua, jar, rng.randint(8, 20), False)
    yield max(1.0, rng.uniform(17.5, 19) * 3600 + START - now[0])
    back = now[0] + rng.uniform(60, 900)  # the phone joins the Wi-Fi again mid-track
    yield from listen(person, rng, lambda: carrier() if now[0] < back else home, ua, jar, rng.randint(8, 20), False)


# -- scrapers ---------------------------------------------------------------------------------


@dataclass
class Scraper:
    name: str
    kind: str  # "single address" | "rotation" | "browser farm"
    tracks: set[int] = field(default_factory=set)
    requests: int = 0
    sessions: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    challenges: int = 0  # challenges solved


def scrape(
    scraper: Scraper, pace: float, address, ua, jar, first_track: int, page_first: bool = False, renew: bool = False
) -> Generator:
    """Walks track ids at ``pace`` seconds per track; waits out 429s, skips on 403.

    ``jar()`` is the cookie jar for the next track (the same one: keeps cookies; a new one:
    a new session every track; None: no cookies). A scraper with a jar is patient: audio
    refused for want of a session (401) or by a soft limit (429), it loads the track's page
    as a browser does, solves the challenge if that page is one (see :func:`solve`), and
    tries the audio again; a 429 that no page load cures is waited out, or with ``renew``,
    when it asks for more than ten minutes (or on a 403), answered by emptying the jar (a
    new session).
    """
    track = first_track
    while True:
        ip, agent, cookies = address(), ua(), jar()
        scraper.addresses.add(ip)
        if page_first:
            yield from load_page(scraper, ip, agent, cookies, track)
        answer = yield Request(ip, f"/tracks/{track}/stream", agent, cookies)
        scraper.requests += 1
        refused = answer.status in (401, 429) and cookies is not None
        if refused and (yield from load_page(scraper, ip, agent, cookies, track)):
            answer = yield Request(ip, f"/tracks/{track}/stream", agent, cookies)
            scraper.requests += 1
        if answer.status == 200:
            scraper.tracks.add(track)
        elif renew and cookies and (answer.status == 403 or answer.retry_after > 600):
            cookies.clear()  # held up or banned: the next page mints another session
            yield pace
            continue
        elif answer.status == 429 and answer.retry_after > 0:
            yield max(pace, answer.retry_after)
            continue  # the same track again
        track = track % CATALOGUE + 1
        yield pace


def load_page(scraper: Scraper, ip: str, agent: str, cookies: Jar | None, track: int) -> Generator:
    """The track's page as a navigation, and its challenge solved if it is one; True: a session
    was set or upgraded."""
    page = yield Request(ip, f"/tracks/{track}", agent, cookies, navigate=True)
    scraper.requests += 1
    if page.challenge is not None:
        answer = yield Request(ip, solve(page.challenge), agent, cookies, navigate=True)
        scraper.requests += 1
        scraper.challenges += 1
        page = answer
    if page.cookie:
        scraper.sessions.add(page.cookie)
        return True
    return False


def solve(config: dict) -> str:
    """The challenge's answer URL, found as the page's script finds it.

    The day runs at the bench's low difficulty (the search takes a few hashes, not 65,000);
    the cost at the shipped difficulty is reported from the number of challenges solved.
    """
    counter = 0
    while not solves(config["token"], str(counter), config["bits"]):
        counter += 1
    return f"{config['base']}&n={counter}"


def hosting_slash24s(ranges: HostingRanges, provider: str, count: int, rng: random.Random) -> list[str]:
    """``count`` /24s (as "a.b.c.") inside one provider's published IPv4 ranges."""
    spans = [(a, b) for a, b, name in ranges._spans[4] if name == provider and b - a >= 255]
    out: set[str] = set()
    while len(out) < count:
        a, b = rng.choice(spans)
        n = rng.randint(a >> 8, b >> 8) << 8
        out.add(f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.")
    return sorted(out)


def residential_slash24s(ranges: HostingRanges, count: int, rng: random.Random, first_octets: list[int]) -> list[str]:
    out: set[str] = set()
    while len(out) < count:
        prefix = f"{rng.choice(first_octets)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
        n = int.from_bytes(bytes(int(x) for x in (prefix + "1").split(".")), "big")
        if ranges.provider(4, n) is None:
            out.add(prefix)
    return sorted(out)


# -- the day ----------------------------------------------------------------------------------


def build(day: Day, rng: random.Random, hosting: HostingRanges) -> tuple[list[Person], list[Scraper]]:
    now = day.clock
    people: list[Person] = []
    scrapers: list[Scraper] = []
    residential = residential_slash24s(hosting, 600, rng, [81, 82, 86, 90, 92, 109, 176, 178])

    for h in range(300):
        person = Person("households")
        people.append(person)
        devices = rng.randint(1, 3)
        uas = [rng.choice(BROWSERS) for _ in range(devices)]
        ip = residential[h] + str(rng.randint(2, 254))
        day.start(START, household_day(person, rng, now, ip, uas))

    office = residential[300] + "10"
    for _ in range(30):
        person = Person("office (30 behind one address, 8 h)")
        people.append(person)
        day.start(START, office_worker(person, rng, now, office, rng.choice(BROWSERS[:6])))

    carrier = [residential[301] + str(n) for n in range(16, 32)]
    for _ in range(150):
        person = Person("carrier (150 over 16 addresses of one /24)")
        people.append(person)
        day.start(START, household_day(person, rng, now, carrier, [rng.choice(BROWSERS)]))

    family = residential[302] + "77"
    for _ in range(4):
        person = Person("family (4 identical iPhones, one address)")
        people.append(person)
        day.start(START, household_day(person, rng, now, family, [IPHONE]))

    def add(name: str, kind: str, pace: float, address, ua, jar, page_first: bool = False, renew: bool = False) -> None:
        scraper = Scraper(name, kind)
        scrapers.append(scraper)
        first = rng.randint(1, CATALOGUE)
        day.start(START + rng.uniform(0, 5), scrape(scraper, pace, address, ua, jar, first, page_first, renew))

    chrome = BROWSERS[0]
    one = lambda ip: lambda: ip  # noqa: E731
    fixed = lambda value: lambda: value  # noqa: E731
    keeps = lambda: lambda jar={}: jar  # noqa: E731  (one jar for the whole day)
    fresh = lambda: lambda: {}  # noqa: E731  (an empty jar for every track)
    ua_rotation = lambda: rng.choice(BROWSERS)  # noqa: E731

    add(
        "one address, 1 track/10 s, keeps cookies",
        "single address",
        10,
        one("198.18.1.10"),
        fixed(chrome),
        keeps(),
    )
    add("one address, 1 track/10 s, no cookies", "single address", 10, one("198.18.2.10"), fixed(chrome), fixed(None))
    add(
        "one address, new UA every track, 1 track/3 s, no cookies",
        "single address",
        3,
        one("198.18.3.10"),
        ua_rotation,
        fixed(None),
    )
    add(
        "one address, new UA every track, 1 track/3 s, keeps cookies",
        "single address",
        3,
        one("198.18.4.10"),
        ua_rotation,
        keeps(),
    )
    add(
        "one address, 1 track/10 s, a new session whenever one is held up for long",
        "single address",
        10,
        one("198.18.6.10"),
        fixed(chrome),
        keeps(),
        renew=True,
    )
    add(
        "one address, new UA every track, 1 track/3 s, a new session whenever one is held up for long",
        "single address",
        3,
        one("198.18.7.10"),
        ua_rotation,
        keeps(),
        renew=True,
    )
    add(
        "one address, new session every track, 1 track/10 s",
        "single address",
        10,
        one("198.18.5.10"),
        fixed(chrome),
        fresh(),
    )

    in24 = lambda base: lambda: f"{base}{rng.randint(1, 254)}"  # noqa: E731
    add(
        "rotating in one /24, 1 track/s, keeps one session",
        "rotation",
        1,
        in24("198.18.6."),
        fixed(chrome),
        keeps(),
    )
    add(
        "rotating in one /24, 1 track/s, new session every track",
        "rotation",
        1,
        in24("198.18.7."),
        fixed(chrome),
        fresh(),
    )
    in48 = lambda: f"2001:db8:4d:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"  # noqa: E731
    add(
        "rotating across one IPv6 /48, 1 track/s, keeps one session",
        "rotation",
        1,
        in48,
        fixed(chrome),
        keeps(),
    )
    add("rotating across one IPv6 /48, 1 track/s, new session every track", "rotation", 1, in48, fixed(chrome), fresh())

    dc_pool = hosting_slash24s(hosting, "aws", 5000, rng)
    home_pool = residential_slash24s(hosting, 5000, rng, list(range(60, 100)))
    pool = lambda nets: lambda: f"{rng.choice(nets)}{rng.randint(1, 254)}"  # noqa: E731
    add(
        "pool of 5,000 data-centre /24s, 2 tracks/s, new session every track",
        "rotation",
        0.5,
        pool(dc_pool),
        ua_rotation,
        fresh(),
    )
    add(
        "pool of 5,000 residential /24s, 2 tracks/s, new session every track",
        "rotation",
        0.5,
        pool(home_pool),
        ua_rotation,
        fresh(),
    )

    farm_dc = hosting_slash24s(hosting, "google-cloud", 2000, rng) + hosting_slash24s(hosting, "aws", 2000, rng)
    farm_home = residential_slash24s(hosting, 20000, rng, list(range(100, 140)))

    def walk(nets: list[str]):
        order = itertools.cycle(nets)  # a fresh /24 for every track
        return lambda: f"{next(order)}{rng.randint(1, 254)}"

    add(
        "browser farm, data-centre /24s (fresh /24 and cookie jar per track, page first), 1 track/2 s",
        "browser farm",
        2,
        walk(farm_dc),
        ua_rotation,
        fresh(),
        page_first=True,
    )
    add(
        "browser farm, residential /24s (fresh /24 and cookie jar per track, page first), 1 track/2 s",
        "browser farm",
        2,
        walk(farm_home),
        ua_rotation,
        fresh(),
        page_first=True,
    )
    return people, scrapers


def build_more_people(day: Day, rng: random.Random, hosting: HostingRanges) -> list[Person]:
    """The people an earlier version of this day left out: devices beyond mainstream browsers,
    single-page-app listeners and commuters. They draw from their own random stream, so the
    rows above stay comparable with runs that did not have them."""
    now = day.clock
    people: list[Person] = []
    homes = residential_slash24s(hosting, 200, rng, [31, 37, 46, 77, 79, 84, 88, 94, 95])
    devices = device_user_agents()
    for h in range(60):
        person = Person("households on diverse devices (TVs, in-app browsers, consoles, ...)")
        people.append(person)
        uas = [rng.choice(devices) for _ in range(rng.randint(1, 2))]
        day.start(START, household_day(person, rng, now, homes[h] + str(rng.randint(2, 254)), uas))
    for h in range(40):
        person = Person("single-page-app listeners (one page, then API and audio for hours)")
        people.append(person)
        day.start(START, spa_listener(person, rng, now, homes[60 + h] + str(rng.randint(2, 254)), rng.choice(BROWSERS)))
    phones = [ua for ua in BROWSERS if "Mobile" in ua] or [IPHONE]
    cgnat = [f"100.{64 + n}.{rng.randint(0, 255)}." for n in range(4)]  # the carrier's NAT pool: four /24s
    for h in range(40):
        person = Person("commuters (Wi-Fi to 4G and back, mid-track)")
        people.append(person)
        v6 = f"2a02:8109:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::"
        dual_stack = h % 2 == 0

        def carrier(v6: str = v6, dual_stack: bool = dual_stack) -> str:
            # Each new flow may leave from another NAT pool address; a dual-stack phone's
            # flows go over IPv6 or IPv4 as Happy Eyeballs decides.
            if dual_stack and rng.random() < 0.7:
                return f"{v6}{rng.randint(1, 0xFFFF):x}"
            return f"{rng.choice(cgnat)}{rng.randint(1, 254)}"

        home = homes[100 + h] + str(rng.randint(2, 254))
        day.start(START, commuter_day(person, rng, now, home, carrier, rng.choice(phones)))
    return people


def device_user_agents() -> list[str]:
    """Real User-Agents of people's devices beyond mainstream browsers, from the public corpora
    in tests/data (see each file's header for its source)."""
    agents: list[str] = []
    for path in DEVICE_CORPORA:
        agents += [line for line in (ROOT / path).read_text().splitlines() if line and not line.startswith("#")]
    return agents or BROWSERS


BITS = 4  # the day's challenge difficulty: what the scrapers' search costs is reported, not spent


def day_rules(args: argparse.Namespace) -> str:
    """The rules of the run: ``--rules``, with the challenges made cheap to solve (or sessions off)."""
    import tempfile

    override = "sessions: null" if args.no_sessions else f"sessions: {{challenge: {{difficulty: {BITS}}}}}"
    text = f"version: 1\nextends: {Path(args.rules).resolve()}\n{override}\n"
    path = Path(tempfile.mkdtemp()) / "day.yaml"
    path.write_text(text)
    return str(path)


def shipped_bits(rules: str) -> int:
    from guard.policy.rules import load_rules

    sessions = load_rules(rules).sessions
    return sessions.challenge.difficulty if sessions is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=str(ROOT / "rules" / "default.yaml"))
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    saving.add_options(parser, "day")
    parser.add_argument("--no-sessions", action="store_true", help="sessions off (counters key by address and UA)")
    args = parser.parse_args()

    seeded(args.seed)
    clock = [START]
    os.environ.setdefault("GUARD_SESSION_KEY", "bench-day-" + "k" * 40)  # a fixed key: no warning
    os.environ.setdefault("GUARD_BUDGET_KEY", "bench-day-" + "b" * 40)  # and budgets hash alike every run
    middleware = GuardMiddleware(app, day_rules(args), clock=lambda: clock[0], reload_interval=0)
    middleware.pacer = Pacer(clock=lambda: clock[0], sleep=not_waiting)  # the day's time: counted, not slept
    hosting = middleware.guard.hosting or HostingRanges()
    day = Day(middleware, clock)
    rng = random.Random(args.seed)
    people, scrapers = build(day, rng, hosting)
    people += build_more_people(day, random.Random(f"more people {args.seed}"), hosting)

    started = time.perf_counter()
    asyncio.run(day.run(START + args.hours * 3600))
    seconds = time.perf_counter() - started

    groups: dict[str, Counter] = defaultdict(Counter)
    for person in people:
        g = groups[person.group]
        g["people"] += 1
        g["stopped"] += person.refused > 0
        g["requests"] += person.requests
        g["refused"] += person.refused
        g["tracks"] += len(person.tracks)
    rows = [
        {
            "scraper": s.name,
            "kind": s.kind,
            "tracks": len(s.tracks),
            "target": TARGETS[s.kind],
            "meets_target": len(s.tracks) <= TARGETS[s.kind],
            "requests": s.requests,
            "sessions": len(s.sessions),
            "addresses": len(s.addresses),
            "challenges": s.challenges,
        }
        for s in scrapers
    ]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rules": str(Path(args.rules).resolve().relative_to(ROOT))
        if Path(args.rules).resolve().is_relative_to(ROOT)
        else args.rules,
        "hours": args.hours,
        "seed": args.seed,
        "sessions": "off" if args.no_sessions else "as the rules say",
        "challenge_difficulty": {"shipped": middleware.guard.policy.sessions and shipped_bits(args.rules), "run": BITS},
        "requests": day.requests,
        "seconds": round(seconds, 1),
        "us_per_request": round(seconds / max(1, day.requests) * 1e6, 1),
        "people": {name: dict(g) for name, g in groups.items()},
        "people_stopped": sum(g["stopped"] for g in groups.values()),
        "scrapers": rows,
        "targets": TARGETS,
    }
    print(render(report))
    saving.save(args, report)


def seeded(seed: int) -> None:
    """Make the run depend on ``seed`` alone: string hashing, and the guard's random tokens.

    Python salts ``hash()`` of text per process, which orders sets; the process starts
    again with a fixed salt if it has none. Session ids, challenge nonces and keys come
    from :mod:`secrets`: here from a generator seeded with ``seed`` (a benchmark, not a
    server: nothing here needs to be unguessable).
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    import base64
    import secrets

    tokens = random.Random(f"tokens-{seed}")

    def token_bytes(n: int | None = None) -> bytes:
        return tokens.randbytes(32 if n is None else n)

    def token_urlsafe(n: int | None = None) -> str:
        return base64.urlsafe_b64encode(token_bytes(n)).rstrip(b"=").decode("ascii")

    secrets.token_bytes, secrets.token_urlsafe = token_bytes, token_urlsafe  # type: ignore[assignment]


def render(report: dict) -> str:
    lines = [
        f"one day through GuardMiddleware ({report['rules']}, {report['hours']:g} h, seed {report['seed']}, "
        f"sessions: {report['sessions']}): {report['requests']} requests in {report['seconds']} s "
        f"({report['us_per_request']} us each)",
        "",
        f"{'people':50} {'people':>7} {'stopped':>8} {'requests':>9} {'refused':>8} {'tracks':>7}",
    ]
    for name, g in report["people"].items():
        lines.append(
            f"{name:50} {g['people']:>7} {g['stopped']:>8} {g['requests']:>9} {g['refused']:>8} {g['tracks']:>7}"
        )
    lines += [
        "",
        f"{'scraper':100} {'tracks':>7} {'target':>7} {'requests':>9} {'sessions':>9} {'addresses':>9} "
        f"{'challenges':>10}",
    ]
    for r in report["scrapers"]:
        mark = "" if r["meets_target"] else "  (over target)"
        lines.append(
            f"{r['scraper']:100} {r['tracks']:>7} {r['target']:>7} {r['requests']:>9} {r['sessions']:>9} "
            f"{r['addresses']:>9} {r.get('challenges', 0):>10}{mark}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
