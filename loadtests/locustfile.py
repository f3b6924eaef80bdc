"""Staging load test personas for the guarded platform (run them with loadtests/run.py).

Every persona knows what the guard should do to it, and each response is judged against
that expectation: a listener refused is a *false block* (a failure in locust's report);
a scraper served content is counted as *content obtained*. Client addresses travel in
X-Forwarded-For, so the target must trust the load generator as a proxy
(`guard demo --trusted-proxy 127.0.0.1/32`); they are documentation and test ranges and
only ever appear in headers: all traffic goes to the --host given to locust.

Environment: LOADTEST_SUMMARY (write a JSON tally there at the end), LOADTEST_WEIGHTS
(e.g. "Listener=10,StealthScraper=1"), LOADTEST_SEED, LOADTEST_DAY_SPEED (the day mix:
how many times faster than real time the target's clock runs, GUARD_DEMO_DAY_SPEED).

The day mix (``Day*`` personas, weight 0 unless LOADTEST_WEIGHTS names them, as
``loadtests/run.py --day`` does) exercises the hour and day budgets: with the target's
clock running 96 times faster, a day passes in 15 minutes, and the personas pace
themselves in the target's time (a 3.5-minute track lasts 2.2 real seconds).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from collections import Counter

from locust import HttpUser, between, events, task

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
BROWSERS = [
    CHROME,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.6.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
]
#: What a browser says about each kind of request: the listener loads pages (and keeps the
#: session cookie they set, as locust's client does); the player and scripts fetch.
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Accept": "text/html,*/*;q=0.8"}
MEDIA = {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "audio", "Accept": "*/*"}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "application/json"}
GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
GOOGLEBOT = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)

TALLY: Counter[str] = Counter()
_lock = threading.Lock()
_ids = itertools.count(1)
rng = random.Random(int(os.environ.get("LOADTEST_SEED", "7")))


def tally(name: str, n: int = 1) -> None:
    with _lock:
        TALLY[name] += n


def weights() -> dict[str, int]:
    spec = os.environ.get("LOADTEST_WEIGHTS", "")
    return {k.strip(): int(v) for k, v in (p.split("=") for p in spec.split(",") if "=" in p)}


class Persona(HttpUser):
    abstract = True
    persona = "persona"
    user_agent = CHROME

    def on_start(self) -> None:
        self.number = next(_ids)
        self.address = self.pick_address()

    def pick_address(self) -> str:
        # Listeners come from all over: each from its own /24.
        return f"198.18.{self.number % 250}.{self.number // 250 % 250 + 1}"

    def fetch(
        self, path: str, *, expect_served: bool, name: str, headers: dict | None = None, content: bool = True
    ) -> int:
        """GET ``path`` and judge the answer against this persona's expectation (``content=False``:
        a page a scraper loads for its session, not counted as content obtained)."""
        sent = {"User-Agent": self.user_agent, "X-Forwarded-For": self.address, **(headers or {})}
        with self.client.get(path, headers=sent, name=f"{self.persona}: {name}", catch_response=True) as r:
            status = r.status_code
            tally(f"{self.persona} status {status}")
            if status >= 500 or status == 0:
                tally("5xx")
                r.failure(f"server error {status}")
            elif expect_served and status in (401, 403, 429):
                tally(f"{self.persona} false block")
                r.failure(f"false block ({status})")
            elif not expect_served and status in (200, 206) and content:
                tally(f"{self.persona} content obtained")
                r.success()
            else:
                r.success()
            return status


class Listener(Persona):
    """Browses, plays tracks with Range requests, pauses; must never be blocked."""

    persona = "listener"
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        super().on_start()
        self.user_agent = BROWSERS[self.number % len(BROWSERS)]
        self.favourites = [rng.randint(1, 100_000) for _ in range(20)]

    @task
    def listen(self) -> None:
        track = rng.choice(self.favourites)
        if rng.random() < 0.3:
            self.fetch("/", expect_served=True, name="home", headers=NAVIGATE)
        self.fetch(f"/tracks/{track}", expect_served=True, name="page", headers=NAVIGATE)
        self.fetch(f"/api/tracks/{track}", expect_served=True, name="metadata", headers=FETCH)
        for start in (0, 65536, 131072):
            self.fetch(
                f"/tracks/{track}/stream",
                expect_served=True,
                name="audio range",
                headers={**MEDIA, "Range": f"bytes={start}-{start + 65535}"},
            )


class HonestAICrawler(Persona):
    """GPTBot that reads robots.txt first and then fetches only what it allows (nothing)."""

    persona = "ai crawler"
    user_agent = GPTBOT
    wait_time = between(1.0, 3.0)

    @task
    def crawl(self) -> None:
        self.fetch("/robots.txt", expect_served=True, name="robots.txt")
        self.fetch("/ai.txt", expect_served=True, name="ai.txt")
        tally("ai crawler obeyed robots.txt")  # its own parser forbids every content URL


class StealthScraper(Persona):
    """Browser User-Agent, one address, walking track ids: the page (for a session, which its
    cookie jar keeps), the metadata and the audio of each, fast."""

    persona = "stealth scraper"
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        super().on_start()
        self.address = f"203.0.113.{self.number % 250 + 1}"
        self.next_track = rng.randint(1, 50_000)

    @task
    def scrape(self) -> None:
        self.next_track += 1
        self.fetch(f"/tracks/{self.next_track}", expect_served=False, name="page", headers=NAVIGATE, content=False)
        self.fetch(f"/api/tracks/{self.next_track}", expect_served=False, name="metadata", headers=FETCH)
        self.fetch(f"/tracks/{self.next_track}/stream", expect_served=False, name="audio", headers=MEDIA)


class RotatingScraper(Persona):
    """A new address in one /24 for every request, browser User-Agents rotating too."""

    persona = "rotating scraper v4"
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        super().on_start()
        self.next_track = rng.randint(50_000, 90_000)

    def pick_address(self) -> str:
        return f"192.0.2.{rng.randint(1, 254)}"

    @task
    def scrape(self) -> None:
        self.next_track += 1
        self.address = self.pick_address()
        self.user_agent = rng.choice(BROWSERS)
        self.fetch(f"/api/tracks/{self.next_track}", expect_served=False, name="metadata")


class RotatingScraperV6(RotatingScraper):
    """A new address in one IPv6 /64 for every request."""

    persona = "rotating scraper v6"

    def pick_address(self) -> str:
        return f"2001:db8:77:1:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


class SpoofedGooglebot(Persona):
    """Googlebot's User-Agent from an address outside Google's ranges."""

    persona = "spoofed googlebot"
    user_agent = GOOGLEBOT
    wait_time = between(0.2, 1.0)

    @task
    def crawl(self) -> None:
        self.fetch(f"/tracks/{rng.randint(1, 100_000)}", expect_served=False, name="page")


class VerifiedGooglebot(Persona):
    """Googlebot from Google's published ranges (through the trusted proxy): pages must be served."""

    persona = "verified googlebot"
    user_agent = GOOGLEBOT
    wait_time = between(0.2, 1.0)

    def pick_address(self) -> str:
        return f"66.249.66.{rng.randint(1, 30)}"

    @task
    def crawl(self) -> None:
        self.fetch(f"/tracks/{rng.randint(1, 100_000)}", expect_served=True, name="page")


DAY_SPEED = float(os.environ.get("LOADTEST_DAY_SPEED", "96"))


def day_seconds(seconds: float) -> float:
    """Real seconds for ``seconds`` of the target's (compressed) day."""
    return seconds / DAY_SPEED


class DayListener(Persona):
    """A household listener in the compressed day: whole tracks, skims now and then; never blocked."""

    persona = "day listener"

    def on_start(self) -> None:
        super().on_start()
        self.user_agent = BROWSERS[self.number % len(BROWSERS)]
        self.favourites = [rng.randint(1, 100_000) for _ in range(30)]

    def wait_time(self) -> float:
        return day_seconds(rng.uniform(150, 300))  # the track plays out before the next starts

    @task
    def listen(self) -> None:
        track = rng.choice(self.favourites) if rng.random() < 0.3 else rng.randint(1, 100_000)
        self.fetch(f"/tracks/{track}", expect_served=True, name="page", headers=NAVIGATE)
        for start in range(rng.randint(2, 4)):
            headers = {**MEDIA, "Range": f"bytes={start * 65536}-{start * 65536 + 65535}"}
            self.fetch(f"/tracks/{track}/stream", expect_served=True, name="audio range", headers=headers)


class DayPatientScraper(Persona):
    """One address, one browser, one track every 10 s of the target's day, all day, keeping its
    cookies: refused audio for want of a session (401), it loads the track's page for one and
    tries again. The session's day budget (300 tracks) stops it."""

    persona = "day patient scraper"

    def on_start(self) -> None:
        super().on_start()
        self.address = f"203.0.113.{self.number % 250 + 1}"
        self.next_track = rng.randint(1, 50_000)

    def wait_time(self) -> float:
        return day_seconds(10)

    def before_track(self) -> None:
        """What the persona changes before each track (nothing: one address, one browser)."""

    @task
    def scrape(self) -> None:
        # One task for every Day scraper: a subclass's @task would run beside this one
        # (locust gathers the tasks of base classes too), so subclasses override the hook.
        self.before_track()
        self.next_track += 1
        path = f"/tracks/{self.next_track}/stream"
        if self.fetch(path, expect_served=False, name="audio", headers=MEDIA) == 401:
            self.fetch(f"/tracks/{self.next_track}", expect_served=False, name="page", headers=NAVIGATE, content=False)
            self.fetch(path, expect_served=False, name="audio", headers=MEDIA)


class DayUARotator(DayPatientScraper):
    """One address, a new browser User-Agent every track, one track every 3 s of the day, keeping
    its cookie jar: a session moved to another kind of device is refused, and one passed between
    User-Agents of one platform meets the session's User-Agent limit; the address's budget of
    sessions stops the new ones."""

    persona = "day ua rotator"

    def wait_time(self) -> float:
        return day_seconds(3)

    def before_track(self) -> None:
        self.user_agent = f"{rng.choice(BROWSERS)} r/{rng.randint(1, 10**9)}"


class DaySubnetRotator(DayPatientScraper):
    """A new address in one /24, a new User-Agent and an empty cookie jar every track, one track a
    second of the day: the /24's budgets of tracks and of sessions stop it."""

    persona = "day subnet rotator"

    def wait_time(self) -> float:
        return day_seconds(1)

    def before_track(self) -> None:
        self.address = f"192.0.2.{rng.randint(1, 254)}"
        self.user_agent = f"{rng.choice(BROWSERS)} r/{rng.randint(1, 10**9)}"
        self.client.cookies.clear()


PERSONAS = [
    Listener,
    HonestAICrawler,
    StealthScraper,
    RotatingScraper,
    RotatingScraperV6,
    SpoofedGooglebot,
    VerifiedGooglebot,
    DayListener,
    DayPatientScraper,
    DayUARotator,
    DaySubnetRotator,
]
DEFAULT_WEIGHTS = {
    "DayListener": 0,
    "DayPatientScraper": 0,
    "DayUARotator": 0,
    "DaySubnetRotator": 0,
    "Listener": 12,
    "HonestAICrawler": 1,
    "StealthScraper": 2,
    "RotatingScraper": 1,
    "RotatingScraperV6": 1,
    "SpoofedGooglebot": 1,
    "VerifiedGooglebot": 1,
}


def _set_weights() -> None:
    chosen = weights()
    for user_class in PERSONAS:
        user_class.weight = chosen.get(user_class.__name__, DEFAULT_WEIGHTS[user_class.__name__])


_set_weights()


@events.quitting.add_listener
def write_summary(environment, **kwargs) -> None:
    path = os.environ.get("LOADTEST_SUMMARY")
    if path:
        with open(path, "w") as f:
            json.dump(dict(TALLY), f, indent=2, sort_keys=True)
