"""What canaries and edge fingerprints cost per request: microseconds in process (ASGI calls).

Usage: python bench/sweeps.py [--n 20000] [--save | --out FILE]

Through the whole middleware and the demo app on the memory store, browsers spread over
addresses behind a trusted proxy so that no limit is reached, with the shipped rules:

* without the sweep checks (the shipped rules less ``canaries`` and ``fingerprints``);
* with them, a request without a fingerprint header (no edge that writes one);
* with a mainstream browser's JA4 (read, looked up, not counted);
* with a rare JA4 (read, counted by the shadow ``fingerprint-day`` budget, its canary ban looked up);
* a canary fetch (the decoy and the bans: the scraper's request only);
* the canary membership test alone.

The machine is shared: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CHROMIUM_JA4 = b"t13d1516h2_8daaf6152771_02713d6af862"
RARE_JA4 = b"t13d1311h2_aaaaaaaaaaaa_bbbbbbbbbbbb"
HEADER = b"cloudfront-viewer-ja4-fingerprint"

from guard.testing import http_scope  # noqa: E402

Request = tuple[str, str, list[tuple[bytes, bytes]]]


async def call(app, path: str, ip: str, headers: list[tuple[bytes, bytes]]) -> int:
    status = [0]

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    forwarded = [(b"host", b"music.example"), (b"x-forwarded-for", ip.encode()), *headers]
    await app(http_scope(path, "127.0.0.1", forwarded), receive, send)
    return status[0]


async def per_request_us(app, requests: list[Request], expect: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path, ip, headers in requests:
            status = await call(app, path, ip, headers)
            assert status == expect, (path, status)
        runs.append((time.perf_counter() - start) / len(requests) * 1e6)
    return statistics.median(runs)


def browsers(n: int, extra: list[tuple[bytes, bytes]], net: int) -> list[Request]:
    ua = [(b"user-agent", CHROME.encode()), *extra]
    return [(f"/tracks/{7 + i % 200}", f"10.{net}.{i // 256 % 256}.{i % 256}", ua) for i in range(n)]


async def measure(n: int) -> dict:
    from guard.demo.app import create_app
    from guard.policy.rules import load_rules

    policy = load_rules(ROOT / "rules" / "default.yaml")
    bare = dataclasses.replace(
        policy,
        canaries=None,
        fingerprint_header=None,
        rules=[r for r in policy.rules if not r.id.startswith("canary")],
        _plans={},
    )
    proxy = ["127.0.0.1/32"]
    without = create_app(bare, trusted_proxies=proxy, reload_interval=0)
    with_sweeps = create_app(policy, trusted_proxies=proxy, reload_interval=0)
    trap = with_sweeps.canaries
    canaries = [
        (
            f"/api/tracks/{trap.ids.linked(64)[i % 64]}",
            f"10.200.{i // 256 % 256}.{i % 256}",
            [(b"user-agent", CHROME.encode())],
        )
        for i in range(n // 20)
    ]
    start = time.perf_counter()
    for _ in range(n):
        trap.is_canary("7")
    lookup_ns = (time.perf_counter() - start) / n * 1e9
    cases = {
        "without_sweep_checks": (without, browsers(n, [], 1)),
        "no_fingerprint_header": (with_sweeps, browsers(n, [], 2)),
        "browser_ja4": (with_sweeps, browsers(n, [(HEADER, CHROMIUM_JA4)], 3)),
        "rare_ja4": (with_sweeps, browsers(n, [(HEADER, RARE_JA4)], 4)),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(6):  # interleaved, the first round (sessions minted, caches filled) discarded
        for name, (app, requests) in cases.items():
            took = await per_request_us(app, requests, 200, repeats=1)
            if round_:
                runs[name].append(took)
    return {
        "browser_page_us": {name: round(statistics.median(values), 1) for name, values in runs.items()},
        "canary_fetch_us": round(await per_request_us(with_sweeps, canaries, 200, repeats=1), 1),
        "canary_lookup_ns": round(lookup_ns, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    saving.add_options(parser, "sweeps")
    args = parser.parse_args()
    logging.getLogger("guard").setLevel(logging.ERROR)  # a line per canary fetch otherwise
    figures = asyncio.run(measure(args.n))
    result = {"python": platform.python_version(), "machine": platform.machine(), "n": args.n, **figures}
    print(json.dumps(result, indent=2))
    saving.save(args, result)


if __name__ == "__main__":
    main()
