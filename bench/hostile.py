"""What hostile requests cost: memory for many huge User-Agents, and the worst time of one request.

Usage: python bench/hostile.py [--count 18000] [--sizes 16384,65536] [--repeats 30] [--save]

Memory: one fresh process per size sends ``--count`` requests through the middleware
(shipped rules, embedded store, a 200 app), each with a distinct User-Agent of that many
bytes, and reports its resident memory (VmRSS) before and after. The strings change in
their first and last bytes, so that no prefix or suffix repeats.

Time: in process, every shape of request below is sent ``--repeats`` times, each time with
new bytes (nothing is served from a cache), at most 64 KiB of headers in all (what a
server lets through). Each request is timed from the middleware's call to its answer in
CPU time of this process (time.process_time, so that other work on a shared machine does
not count; a garbage collection does); the worst and the median of each shape are printed. Targets: at most 2 ms
per request in the worst case; memory bounded by the caches' byte budgets.

Figures print; with ``--save`` they are also written to bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "hostile.json"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
#: Letters that fold onto GPTBot's (Greek, Cyrillic, accented Latin), digits and marks.
LOOKALIKES = "G\u03a1\u03a4\u0412\u043et\u0120\u1e56\u016201l|!"
LIMIT = 65536 - 512  # bytes of one header, leaving room for the rest of the request


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def middleware():  # type: ignore[no-untyped-def]
    """The shipped rules around an app that answers 200, on the embedded store, tuned as servers run it."""
    from guard.middleware import GuardMiddleware

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return GuardMiddleware(app, reload_interval=0, tune_gc=True)  # as `guard serve` runs it


async def call(guard, path: str, headers: list[tuple[bytes, bytes]], peer: str, query: bytes = b"") -> int:  # type: ignore[no-untyped-def]
    status = 0

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    raw = path.encode("latin-1", "replace")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": (peer, 40000),
        "server": ("127.0.0.1", 8000),
    }
    await guard(scope, receive, send)
    return status


# -- memory -------------------------------------------------------------------------------------


def memory_child(count: int, size: int) -> dict[str, float]:
    """In this process: ``count`` requests, each with a distinct User-Agent of ``size`` bytes."""
    guard = middleware()
    filler = "Mozilla/5.0 (X11; Linux x86_64) " * (size // 32 + 1)

    async def run() -> dict[str, float]:
        await call(guard, "/", [(b"user-agent", CHROME.encode())], "198.51.100.1")  # start-up work first
        before = rss_mib()
        for n in range(count):
            tag = f"{n:08d}"
            ua = (tag + filler)[: size - 8] + tag
            await call(guard, "/tracks/1", [(b"user-agent", ua.encode())], f"10.0.{n >> 8 & 255}.{n & 255}")
        return {"rss_before_mib": round(before, 1), "rss_after_mib": round(rss_mib(), 1)}

    return asyncio.run(run())


def memory(count: int, sizes: list[int]) -> list[dict[str, float]]:
    rows = []
    for size in sizes:
        command = [sys.executable, __file__, "--memory-child", str(size), "--count", str(count)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        rows.append({"user_agents": count, "bytes": size, **result})
    return rows


# -- time ---------------------------------------------------------------------------------------

Shape = Callable[[random.Random], tuple[str, list[tuple[bytes, bytes]], bytes]]


def _noise(rng: random.Random, n: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz ") -> str:
    return "".join(rng.choices(alphabet, k=n))


def _ua(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"user-agent", value.encode("utf-8")[:LIMIT])]  # as a client sends text: UTF-8


def shapes() -> dict[str, Shape]:
    """Requests a scraper can build to make guard work, each new every time."""
    return {
        "browser": lambda r: ("/tracks/1/stream", _ua(CHROME.replace("131", str(r.randrange(10**6)))), b""),
        "ua 64k letters": lambda r: ("/tracks/1/stream", _ua(_noise(r, LIMIT)), b""),
        "ua 64k words": lambda r: ("/", _ua(" ".join(_noise(r, 3, "abcdefgh") for _ in range(LIMIT // 4))), b""),
        "ua 64k browser, bot in the middle": lambda r: (
            "/tracks/1/stream",
            _ua(CHROME + " " + _noise(r, 5000) + " GPTBot/1.2 " + _noise(r, LIMIT - 5200 - len(CHROME))),
            b"",
        ),
        "ua 64k bot words": lambda r: ("/", _ua(("xbot " * (LIMIT // 5))[:-6] + str(r.random())), b""),
        "ua 64k parentheses": lambda r: ("/", _ua("Mozilla/5.0 " + "(" * (LIMIT - 40) + str(r.random())), b""),
        "ua 64k lookalikes": lambda r: ("/", _ua("".join(r.choices(LOOKALIKES, k=LIMIT // 2))), b""),
        "ua 64k high bytes": lambda r: ("/", [(b"user-agent", bytes(r.choices(range(128, 256), k=LIMIT)))], b""),
        "ua 2k high bytes": lambda r: ("/", [(b"user-agent", bytes(r.choices(range(128, 256), k=2048)))], b""),
        "ua 2k lookalikes": lambda r: ("/", _ua("".join(r.choices(LOOKALIKES, k=1024))[:1024]), b""),
        "ua 2k browser-shaped": lambda r: ("/", _ua((CHROME + " Safari/537.36" * 150)[:2040] + str(r.random())), b""),
        "ua 2k words": lambda r: ("/", _ua(" ".join(_noise(r, 3, "abcdefgh") for _ in range(510))), b""),
        "ua 2k token halves": lambda r: ("/", _ua(" ".join(r.choices(HALVES, k=400))[:2040]), b""),
        "ua 2k browser + products": lambda r: (
            "/tracks/1",
            _ua((CHROME + "".join(f" P{r.randrange(10**6)}/1.{i}" for i in range(200)))[:2040]),
            b"",
        ),
        "ua 64k url": lambda r: ("/", _ua("Mozilla/5.0 (compatible; +http://" + _noise(r, LIMIT - 40) + ")"), b""),
        "forwarded-for 64k": lambda r: (
            "/tracks/1/stream",
            [*_ua(CHROME), (b"x-forwarded-for", ", ".join(f"10.{r.randrange(256)}.0.1" for _ in range(5000)).encode())],
            b"",
        ),
        "cookie 64k": lambda r: (
            "/tracks/1/stream",
            [*_ua(CHROME), (b"cookie", "; ".join(f"guard_session={_noise(r, 40)}" for _ in range(1150)).encode())],
            b"",
        ),
        "path 64k": lambda r: ("/tracks/" + "1/" * (LIMIT // 2 - 8) + str(r.random()), _ua(CHROME), b""),
        "query 64k": lambda r: ("/tracks/1/stream", _ua(CHROME), f"{'&'.join(['a=b'] * 16000)}{r.random()}".encode()),
        "many headers": lambda r: (
            "/tracks/1/stream",
            _ua(CHROME) + [(f"x-{i}".encode(), _noise(r, 50).encode()) for i in range(LIMIT // 60)],
            b"",
        ),
        "signature 64k": lambda r: (
            "/tracks/1/stream",
            [
                *_ua(CHROME),
                (b"signature-input", ("sig1=(" + '"@authority" ' * (LIMIT // 14) + ');tag="web-bot-auth"').encode()),
                (b"signature", f"sig1=:{_noise(r, 64)}:".encode()),
                (b"signature-agent", b'"https://example.com"'),
            ],
            b"",
        ),
    }


def _token_halves() -> list[str]:
    """The first and last halves of the catalogue's tokens: near misses for its matcher."""
    from guard.identity.catalogue import load_catalogue

    tokens = [t for agent in load_catalogue(ROOT / "rules" / "agents.yaml").agents for t in agent.ua_tokens]
    return [t[: len(t) // 2 + 1] for t in tokens] + [t[len(t) // 2 :] for t in tokens]


HALVES: list[str] = []


def timing(repeats: int) -> list[dict[str, object]]:
    guard = middleware()
    rng = random.Random(7)
    HALVES[:] = _token_halves()

    async def run() -> list[dict[str, object]]:
        await call(guard, "/", _ua(CHROME), "198.51.100.1")  # start-up work first
        rows = []
        for name, shape in shapes().items():
            times = []
            for n in range(repeats):
                path, headers, query = shape(rng)
                start = time.process_time()
                status = await call(guard, path, headers, f"10.1.{n >> 8 & 255}.{n & 255}", query)
                times.append((time.process_time() - start) * 1000)
            size = sum(len(k) + len(v) for k, v in headers) + len(path) + len(query)
            rows.append(
                {
                    "shape": name,
                    "bytes": size,
                    "status": status,
                    "median_ms": round(statistics.median(times), 3),
                    "worst_ms": round(max(times), 3),
                }
            )
        return rows

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=18_000)
    parser.add_argument("--sizes", default="16384,65536")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--save", action="store_true", help=f"also write the figures to {OUT.relative_to(ROOT)}")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.count, args.memory_child)))
        return

    rows = timing(args.repeats)
    print(f"{'request':36} {'bytes':>7} {'status':>6} {'median ms':>10} {'worst ms':>9}")
    for row in rows:
        print(f"{row['shape']:36} {row['bytes']:7} {row['status']:6} {row['median_ms']:10.3f} {row['worst_ms']:9.3f}")
    mem = memory(args.count, [int(s) for s in args.sizes.split(",")])
    print(f"\n{'user agents':>11} {'bytes each':>10} {'RSS before MiB':>15} {'RSS after MiB':>14}")
    for m in mem:
        print(f"{m['user_agents']:11} {m['bytes']:10} {m['rss_before_mib']:15} {m['rss_after_mib']:14}")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "requests": rows,
        "worst_ms": max(float(str(r["worst_ms"])) for r in rows),
        "memory": mem,
        "targets": {"worst_ms": 2.0},
    }
    print(f"\nworst request: {results['worst_ms']} ms")
    if args.save:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(f"saved to {OUT}")


if __name__ == "__main__":
    main()
