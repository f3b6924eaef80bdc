"""What sessions cost per request: microseconds in process (ASGI calls, no network).

Usage: python bench/sessions.py [--n 20000] [--save | --out FILE]

Through the whole middleware and the demo app on the memory store, the same requests
with sessions on and off:

* a listener's audio Range request carrying a valid session cookie (the token verified:
  one HMAC-SHA256, the network hash, the platform family);
* a track page load by a listener with a session (verified, nothing minted);
* a page load without a session (a session minted: two more counters in the one store call,
  a token signed, Set-Cookie added);
* the token check alone, with the current key and with the previous key (two HMACs).

The machine is shared: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

from guard.demo.app import create_app
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys, SessionSettings
from guard.sessions.tokens import SessionCodec
from guard.testing import http_scope

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from browsers import call as call_scope  # noqa: E402

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"accept", b"text/html")]
MEDIA = [(b"sec-fetch-mode", b"no-cors"), (b"range", b"bytes=0-65535")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.5  # a listener's pace: no limit is reached, every request is served
        return self.now


async def call(app, path: str, ip: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes | None]:
    """Status and Set-Cookie of one request; the body is not read (streaming stops at the start)."""
    scope = http_scope(path, ip, [(b"host", b"music.example"), (b"user-agent", CHROME.encode()), *headers])
    return await call_scope(app, scope)


async def timed(n: int, request) -> float:
    """Median microseconds of ``request(i)`` over ``n`` calls (in batches of 1,000)."""
    batches = []
    for start in range(0, n, 1000):
        began = time.perf_counter()
        for i in range(start, min(n, start + 1000)):
            await request(i)
        batches.append((time.perf_counter() - began) / min(1000, n - start) * 1e6)
    return statistics.median(batches)


async def measure(n: int) -> dict:
    policy = load_rules(ROOT / "rules" / "default.yaml")
    keys = SessionKeys("b" * 40, previous="a" * 40)
    on = create_app(policy, clock=Clock(), sessions=SessionSettings(), session_keys=keys, reload_interval=0)
    # Sessions off: the shipped rules without their sessions section (they have one).
    off = create_app(dataclasses.replace(policy, sessions=None), clock=Clock(), reload_interval=0)
    status, cookie = await call(on, "/tracks/1", "198.51.100.7", NAVIGATE)
    assert status == 200 and cookie is not None
    session_cookie = [(b"cookie", cookie.split(b";", 1)[0])]
    results: dict[str, float] = {}
    for name, app, headers in (("sessions", on, session_cookie), ("no sessions", off, [])):

        def audio(i: int, app=app, headers=headers):
            return call(app, f"/tracks/{i % 30 + 1}/stream", "198.51.100.7", MEDIA + headers)

        def page(i: int, app=app, headers=headers):
            return call(app, f"/tracks/{i % 30 + 1}", "198.51.100.7", NAVIGATE + headers)

        results[f"audio range, {name}"] = await timed(n, audio)
        results[f"page with a session, {name}"] = await timed(n, page)
    # A page without a cookie from a new /24 each time (within minting limits): a session minted.
    results["page minting a session"] = await timed(
        n, lambda i: call(on, "/tracks/2", f"10.{i % 256}.{i // 256 % 256}.1", NAVIGATE)
    )
    results["page without a cookie, no sessions"] = await timed(
        n, lambda i: call(off, "/tracks/2", f"10.{i % 256}.{i // 256 % 256}.1", NAVIGATE)
    )
    codec = SessionCodec(keys)
    token = cookie.split(b";", 1)[0].split(b"=", 1)[1].decode()
    old = SessionCodec(SessionKeys("a" * 40)).dumps(codec.loads(token))  # type: ignore[arg-type]

    async def check(i: int, t: str = token) -> None:
        codec.loads(t)

    results["token check, current key"] = await timed(n, check)
    results["token check, previous key"] = await timed(n, lambda i: check(i, old))
    return {k: round(v, 1) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    saving.add_options(parser, "sessions")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.n))
    for name, us in figures.items():
        print(f"{name:40s} {us:8.1f} us")
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "requests_per_figure": args.n,
        "median_microseconds": figures,
        "note": "in process, whole middleware and demo app, memory store; shared machine: compare within one run",
    }
    saving.save(args, report)


if __name__ == "__main__":
    main()
