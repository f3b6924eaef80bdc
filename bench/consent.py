"""What the consent gate costs per request: microseconds in process (ASGI calls, no network).

Usage: python bench/consent.py [--n 20000] [--save | --out FILE]

Measured on the memory store with the shipped consent file, through the whole middleware
and the demo app, against the same middleware without consent:

* a browser on an opted-in artist's track page (the gate only adds the artist's signals);
* a licensed, verified GPTBot on opted-in content (licence check, consent read, ledger
  write in a worker thread; the rules alone would block it, so there is no baseline);
* a GPTBot on an artist who did not opt in (a consent read, then the rules' 403);
* the gate's own check for the browser request, alone.

The machine is shared: compare figures from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"

from guard.testing import http_scope  # noqa: E402


async def call(app, path: str, ip: str, headers: list[tuple[bytes, bytes]]) -> int:
    status = [0]

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    scope = http_scope(path, ip, [(b"host", b"music.example"), *headers])
    await app(scope, receive, send)
    return status[0]


async def per_request_us(app, requests: list[tuple[str, str, list]], expect: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path, ip, headers in requests:
            status = await call(app, path, ip, headers)
            assert status == expect, (path, status)
        runs.append((time.perf_counter() - start) / len(requests) * 1e6)
    return statistics.median(runs)


async def gate_check_us(app, n: int) -> float:
    """The consent gate alone for a browser on an opted-in artist's page (facts built once)."""
    scope = {"type": "http", "scheme": "http", "path": "/tracks/7", "client": ("10.0.0.1", 1)}
    scope["headers"] = [(b"host", b"music.example"), (b"user-agent", CHROME.encode())]
    guard = app.guard
    facts = guard.facts(guard.resolver.resolve(scope), CHROME, "/tracks/7", None, "")
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await app.consent.check(scope, facts, None, None, [])
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


async def measure(n: int, tmp: Path) -> dict:
    from guard.consent.licences import Licences, load_key
    from guard.consent.settings import ConsentSettings
    from guard.demo.app import create_app

    rules = ROOT / "rules" / "default.yaml"
    settings = ConsentSettings(
        file=str(ROOT / "rules" / "consent.yaml"), ledger=str(tmp / "ledger.jsonl"), licence_key=str(tmp / "key.json")
    )
    now = time.time()
    token = Licences(load_key(tmp / "key.json")).issue("OpenAI", ["a7"], ["ai-train"], now=now)
    with_consent = create_app(rules, consent=settings, reload_interval=0)
    without = create_app(rules, reload_interval=0)
    ua = [(b"user-agent", CHROME.encode())]
    # Browsers spread over addresses so that no limit is reached; the page of a7's tracks.
    browsers = [
        (f"/tracks/{7 + 500 * (i % 200)}", f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", ua) for i in range(n)
    ]
    gpt = [(b"user-agent", GPTBOT.encode())]
    licensed = [
        (f"/api/tracks/{7 + 500 * (i % 200)}", "20.171.206.10", [*gpt, (b"authorization", f"License {token}".encode())])
        for i in range(n // 10)
    ]
    refused = [(f"/api/tracks/{8 + 500 * (i % 200)}", "20.171.206.10", gpt) for i in range(n // 10)]
    gate_us = await gate_check_us(with_consent, n)
    return {
        "gate_check_browser_us": round(gate_us, 1),
        "browser_page_us": {
            "without_consent": round(await per_request_us(without, browsers, 200), 1),
            "with_consent": round(await per_request_us(with_consent, browsers, 200), 1),
        },
        "licensed_gptbot_us": round(await per_request_us(with_consent, licensed, 200), 1),
        "gptbot_not_opted_in_us": round(await per_request_us(with_consent, refused, 403), 1),
        "ledger_records": sum(1 for _ in (tmp / "ledger.jsonl").open()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    saving.add_options(parser, "consent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(measure(args.n, Path(tmp)))
    result = {"python": platform.python_version(), "machine": platform.machine(), "n": args.n, **figures}
    print(json.dumps(result, indent=2))
    saving.save(args, result)


if __name__ == "__main__":
    main()
