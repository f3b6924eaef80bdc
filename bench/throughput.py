"""Requests per second of the demo platform: bare, guarded (memory), guarded (Redis), and
behind slowapi with memory and with Redis storage, side by side. One uvicorn worker each,
loaded by wrk on loopback.

Usage: python bench/throughput.py [--seconds 8] [--connections 32] [--rounds 3] [--gc tuned|default]
                                  [--save | --out FILE]

Needs wrk (Debian package `wrk`) and redis-server; starts its own Redis on a free port.
The guard runs the shipped rules with sessions on (bench/browsers.py). The load
(bench/wrk_clients.lua): 2,000 browser-like listeners behind a trusted loopback proxy
(X-Forwarded-For), each in its own /24, each keeping the session cookie its first page load
gave it (harvested in process before the runs, signed with a key every server shares), each
going round a track page, its JSON and two audio Range requests, then the next track. Every
request is allowed: the path every real listener takes. The variants run interleaved, one
round after the other, and the median round is reported (the machine may be shared: the
load average is saved with the figures).

Every server runs with the same garbage collector settings: by default those ``guard demo``
and ``guard serve`` use (guard.ops.collector.tune_gc: start-up frozen, full collections
rare); ``--gc default`` keeps Python's.

Reported per variant: requests per second and the fraction of bare; wrk's p50 and p99
latency, and the p99 the guard adds over bare; Redis round trips (EVALSHA/EVAL calls),
commands (including those the script runs) and Redis's own time per request, from INFO
commandstats (Redis shares the machine's cores with the server and wrk); and what a banned
client costs Redis. Under wrk's saturating closed loop a slower server answers each
connection later, so the p99 added there is mostly the lower throughput; a light-load run
(``--light-connections``, 2 by default, one per variant after the rounds) gives the
latency each request adds itself, pauses included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import saving  # bench/saving.py: --save and --out

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from browsers import BENCH_SESSION_KEY, CHROME, harvest_cookies, rules_file  # noqa: E402

from guard.testing import RedisServer, free_port, wait_for_http  # noqa: E402

VARIANTS = ("bare", "guard_memory", "guard_redis", "slowapi_memory", "slowapi_redis")
TARGETS = {
    "guard_memory_fraction_of_bare": 0.90,
    "guard_redis_fraction_of_bare": 0.80,
    "guard_redis_over_slowapi_redis": 2.0,
    "redis_round_trips_per_checked_request": 1.0,
    "redis_round_trips_per_banned_request": 0.0,
    "p99_added_ms": 1.0,
}


def commands(port: int) -> tuple[int, int, int]:
    """(script calls, all commands, microseconds Redis spent on commands, scripts counted once)
    so far, not counting the INFO calls that read them."""
    stats = redis.Redis(port=port).info("commandstats")
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    everything = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
    # A script's time includes the commands it runs; the few commands outside scripts (guard
    # top's flush every 5 s) are left out then.
    timed = ("cmdstat_evalsha", "cmdstat_eval") if scripts else tuple(k for k in stats if k != "cmdstat_info")
    usec = sum(v["usec"] for k, v in stats.items() if k in timed)
    return scripts, everything, usec


def ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``4.04ms``, ``1.20s``) in milliseconds."""
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_variant(variant: str, env: dict, redis_port: int, seconds: int, connections: int) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"apps:{variant}",
            "--factory",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
            "--no-proxy-headers",
        ],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/healthz", process=server)
        wrk = ["wrk", "-t1", f"-c{connections}", "-s", str(HERE / "wrk_clients.lua"), base]
        subprocess.run([*wrk[:2], "-d2s", *wrk[2:]], capture_output=True, check=True, env=env)  # warm up
        before = commands(redis_port)
        out = subprocess.run(
            [*wrk[:2], f"-d{seconds}s", "--latency", *wrk[2:]], capture_output=True, text=True, check=True, env=env
        ).stdout
        after = commands(redis_port)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rps,
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "p50_ms": ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "redis_round_trips_per_request": round((after[0] - before[0]) / total, 3),
        "redis_commands_per_request": round((after[1] - before[1]) / total, 2),
        "redis_cpu_us_per_request": round((after[2] - before[2]) / total, 1),
    }


def banned_cost(rules: Path, redis_url: str, redis_port: int) -> dict:
    """Redis round trips spent on requests from a client the guard has already banned."""
    from guard.identity.address import ClientResolver
    from guard.policy.engine import Guard
    from guard.policy.rules import load_rules
    from guard.stores.redis import RedisStore

    async def main() -> dict:
        store = RedisStore.from_url(redis_url, timeout=1.0)
        guard = Guard(load_rules(rules), store)
        client = ClientResolver().resolve({"client": ("192.0.2.1", 1), "headers": []})
        track = 0
        while True:  # fetch distinct tracks until banned
            track += 1
            decision = await guard.decide(guard.facts(client, CHROME, f"/api/tracks/{track}"))
            if "banned" in decision.reason:
                break
        before = commands(redis_port)
        for n in range(1000):
            await guard.decide(guard.facts(client, CHROME, f"/api/tracks/{track + n}"))
        after = commands(redis_port)
        await store.close()
        return {"requests_after_ban": 1000, "redis_round_trips": after[0] - before[0], "banned_after_tracks": track}

    return asyncio.run(main())


def harvest(rules: Path, clients: int) -> Path:
    """Each listener's session cookie from its first page load (in process, the shared key)."""
    from guard.demo.app import create_app

    app = create_app(rules, trusted_proxies=["127.0.0.1/32"], reload_interval=0)
    cookies = asyncio.run(harvest_cookies(app, clients))
    path = rules.parent / "cookies.txt"
    path.write_bytes(b"\n".join(cookies) + b"\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2000, help="browser-like listeners in the load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--light-connections",
        type=int,
        default=2,
        help="connections of the light-load run (latency without queueing; 0: skip it)",
    )
    parser.add_argument(
        "--gc",
        default="tuned",
        help="garbage collector settings of every server: tuned (guard.ops.collector, as guard demo and "
        "guard serve run), default (Python's), or a threshold a,b,c",
    )
    saving.add_options(parser, "throughput")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {'wrk' if tool == 'wrk' else 'redis-server'}")
    variants = [v for v in args.variants.split(",") if v]

    os.environ["GUARD_SESSION_KEY"] = BENCH_SESSION_KEY
    os.environ.setdefault("GUARD_BUDGET_KEY", "bench-only-budget-key")
    rules = rules_file(tempfile.mkdtemp(prefix="guard-bench-"))
    cookies = harvest(rules, args.clients)
    store = RedisServer().start()
    env = dict(
        os.environ,
        BENCH_REDIS_URL=store.url,
        BENCH_RULES=str(rules),
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]),
        CLIENTS=str(args.clients),
        COOKIES=str(cookies),
        BENCH_GC=args.gc,
    )
    loads = [os.getloadavg()[0]]
    try:
        # Rounds interleave the variants so that a noisy neighbour hurts all of them alike.
        rounds: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                rounds[v].append(run_variant(v, env, store.port, args.seconds, args.connections))
                loads.append(os.getloadavg()[0])
        results = {}
        for v, runs in rounds.items():
            runs.sort(key=lambda r: r["requests_per_s"])
            results[v] = dict(runs[len(runs) // 2], all_requests_per_s=[r["requests_per_s"] for r in runs])
        # Light load: a few connections, so the latencies are each request's own time (and the
        # pauses it meets), not the queue a saturating load builds when throughput is lower.
        for v in variants if args.light_connections else ():
            light = run_variant(v, env, store.port, args.seconds, args.light_connections)
            results[v]["light"] = {k: light[k] for k in ("requests_per_s", "p50_ms", "p99_ms")}
        banned = banned_cost(rules, store.url, store.port)
    finally:
        store.stop()
    bare = results.get("bare", {}).get("requests_per_s")
    for figures in results.values():
        if bare:
            figures["fraction_of_bare"] = round(figures["requests_per_s"] / bare, 3)
            figures["p99_added_ms"] = round(figures["p99_ms"] - results["bare"]["p99_ms"], 2)
            if "light" in figures and "light" in results["bare"]:
                light, bare_light = figures["light"], results["bare"]["light"]
                light["p50_added_ms"] = round(light["p50_ms"] - bare_light["p50_ms"], 3)
                light["p99_added_ms"] = round(light["p99_ms"] - bare_light["p99_ms"], 3)
    reached: dict[str, float | None] = {}
    if bare and "guard_memory" in results:
        reached["guard_memory_fraction_of_bare"] = results["guard_memory"]["fraction_of_bare"]
    if bare and "guard_redis" in results:
        reached["guard_redis_fraction_of_bare"] = results["guard_redis"]["fraction_of_bare"]
        reached["redis_round_trips_per_checked_request"] = results["guard_redis"]["redis_round_trips_per_request"]
        guarded = [results[v]["p99_added_ms"] for v in ("guard_memory", "guard_redis") if v in results]
        reached["p99_added_ms"] = max(guarded)
        light = [
            results[v]["light"]["p99_added_ms"]
            for v in ("guard_memory", "guard_redis")
            if "light" in results.get(v, {})
        ]
        if light:
            reached["p99_added_ms_light_load"] = max(light)
    if "guard_redis" in results and "slowapi_redis" in results:
        ratio = results["guard_redis"]["requests_per_s"] / results["slowapi_redis"]["requests_per_s"]
        reached["guard_redis_over_slowapi_redis"] = round(ratio, 2)
    reached["redis_round_trips_per_banned_request"] = banned["redis_round_trips"] / banned["requests_after_ban"]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "load_average": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "load": f"wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds (median), "
        f"{args.clients} browser-like listeners keeping their session cookie (X-Forwarded-For via a trusted "
        "proxy, Chrome UA): track page, JSON, two audio Range requests per track; shipped rules with sessions on",
        "gc": {
            "tuned": "tuned: start-up frozen, threshold (700, 10, 1000) (guard.ops.collector)",
            "default": "Python's default (700, 10, 10)",
        }.get(args.gc, f"threshold {args.gc}"),
        "variants": results,
        "banned_client": banned,
        "targets": TARGETS,
        "reached": reached,
    }
    saving.save(args, report)
    print(report["load"], "; garbage collector:", report["gc"])
    print(f"load average {report['load_average']}")
    print(
        f"{'variant':15} {'req/s':>8} {'of bare':>8} {'p50 ms':>7} {'p99 ms':>7} {'+p99':>6} {'non2xx':>7} "
        f"{'trips/req':>9} {'cmds/req':>8} {'redis us':>8}"
    )
    for name, f in results.items():
        print(
            f"{name:15} {f['requests_per_s']:8.0f} {f.get('fraction_of_bare', 0):8.3f} {f['p50_ms']:7.2f} "
            f"{f['p99_ms']:7.2f} {f.get('p99_added_ms', 0):6.2f} {f['non_2xx']:7d} "
            f"{f['redis_round_trips_per_request']:9.3f} {f['redis_commands_per_request']:8.2f} "
            f"{f['redis_cpu_us_per_request']:8.1f}"
        )
    if any("light" in f for f in results.values()):
        print(f"light load ({args.light_connections} connections): p50 / p99 ms, and added over bare")
        for name, f in results.items():
            if "light" in f:
                light = f["light"]
                print(
                    f"  {name:15} {light['requests_per_s']:8.0f} req/s {light['p50_ms']:7.2f} {light['p99_ms']:7.2f}"
                    f"   +{light.get('p50_added_ms', 0):.2f} +{light.get('p99_added_ms', 0):.2f}"
                )
    print(f"banned client: {banned['redis_round_trips']} Redis round trips for {banned['requests_after_ban']} requests")
    print("targets", TARGETS)
    print("reached", reached)


if __name__ == "__main__":
    main()
