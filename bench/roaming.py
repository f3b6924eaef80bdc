"""What a session that follows its listener costs on Redis, and how far a copied cookie gets.

Usage: python bench/roaming.py [--n 2000] [--out bench/results/roaming.json]

Starts its own redis-server on a free loopback port and drives the guarded demo in process
(ASGI calls, the shipped rules, one event loop) with:

* a listener on one network: page, then audio Range requests over many tracks;
* a listener whose requests alternate between Wi-Fi (IPv4), 4G (another /24) and IPv6;
* a farm: one cookie sent from one new /24 after another, in different /16s, until refused.

For each listener it reports Redis commands per audio request (INFO commandstats: the ban
lookups and counters of the one script call) and microseconds per request in process; for
the farm, the networks served before the cookie died. The machine is shared: compare
figures from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import platform
import sys
import time
from pathlib import Path

from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys
from guard.stores.redis import RedisStore
from guard.testing import RedisServer, http_scope

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from browsers import CHROME, call  # noqa: E402

NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"accept", b"text/html")]
MEDIA = [(b"sec-fetch-mode", b"no-cors"), (b"accept", b"*/*"), (b"range", b"bytes=0-1023")]
HOME, MOBILE, V6 = "81.2.69.7", "90.196.3.8", "2a02:c7f:1234::5"


def scope(path: str, ip: str, extra: list, cookie: bytes | None) -> dict:
    headers = [(b"user-agent", CHROME.encode()), *extra]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return http_scope(path, ip, headers)


def commands(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_flushall"))


class Clock:
    """The guard's clock, moved by the listener: a track every 10 seconds, as a skimmer plays."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def guarded(server: RedisServer, clock: Clock):
    store = RedisStore.from_url(server.url, timeout=2.0)
    rules = load_rules(ROOT / "rules" / "default.yaml")
    return create_app(rules, store=store, clock=clock, session_keys=SessionKeys("b" * 40), reload_interval=0), store


async def listener(app, clock: Clock, server: RedisServer, n: int, networks: list[str]) -> dict:
    """Audio over ``n`` tracks (5 Range requests each), moving between ``networks`` every 10 requests."""
    status, set_cookie = await call(app, scope("/tracks/1", networks[0], NAVIGATE, None))
    assert status == 200 and set_cookie is not None
    cookie = set_cookie.split(b";")[0]
    before, started, statuses = commands(server), time.perf_counter(), []
    requests = 0
    for track in range(n):
        clock.now += 10
        for _ in range(5):
            ip = networks[requests // 10 % len(networks)]
            status, renewed = await call(app, scope(f"/tracks/{track % 150 + 1}/stream", ip, MEDIA, cookie))
            cookie = renewed.split(b";")[0] if renewed else cookie
            statuses.append(status)
            requests += 1
    elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "served": sum(s in (200, 206) for s in statuses),
        "redis_commands_per_request": round((commands(server) - before) / requests, 2),
        "us_per_request": round(elapsed / requests * 1e6, 1),
    }


async def farm(app) -> dict:
    status, set_cookie = await call(app, scope("/tracks/1", HOME, NAVIGATE, None))
    assert set_cookie is not None
    cookie = set_cookie.split(b";")[0]
    served = 0
    hosting = app.guard.hosting
    for n in range(200):
        ip = f"{2 + n}.{(n * 37) % 250 + 1}.7.9"
        if hosting is not None and hosting.provider(4, int(ipaddress.IPv4Address(ip))) is not None:
            continue  # a residential pool: no data centres
        status, _ = await call(app, scope("/tracks/1/stream", ip, MEDIA, cookie))
        if status not in (200, 206):
            home, _ = await call(app, scope("/tracks/1/stream", HOME, MEDIA, cookie))
            return {"networks_served": served, "refused_with": status, "first_network_after": home}
        served += 1
    return {"networks_served": served, "refused_with": None, "first_network_after": None}


async def main(n: int) -> dict:
    server = RedisServer().start()
    try:
        results = {}
        for name, networks in (("one network", [HOME]), ("wifi, 4g and ipv6", [HOME, MOBILE, V6])):
            server.client().flushall()
            clock = Clock()
            app, store = guarded(server, clock)
            results[name] = await listener(app, clock, server, n, networks)
            await store.close()
        server.client().flushall()
        app, store = guarded(server, Clock())
        results["farm sharing one cookie"] = await farm(app)
        await store.close()
        return results
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="tracks per listener (5 requests each)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "roaming.json"))
    args = parser.parse_args()
    figures = asyncio.run(main(args.n))
    record = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": platform.node(), **figures}
    print(json.dumps(record, indent=2))
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
