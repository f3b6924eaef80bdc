"""Requests per second of the demo's JSON endpoint: bare, guarded (memory), guarded (Redis),
and behind slowapi with Redis storage. One uvicorn worker each, loaded by wrk on loopback.

Usage: python bench/throughput.py [--seconds 10] [--connections 32] [--out bench/results/throughput.json]

Needs wrk (Debian package `wrk`) and redis-server; starts its own Redis on a free port.
The load (bench/wrk_clients.lua): 2000 listeners behind a trusted loopback proxy
(X-Forwarded-For), spread over 2000 /24 subnets, browser User-Agent, a different track on
each request; the guard evaluates all 7 limits of the shipped rules against their state
and allows every request, the path every real listener takes. ``--clients 0`` makes
every request a new client (the worst case: every counter is created afresh). Also
reports Redis round trips (EVALSHA/EVAL calls) and commands (including those the script
runs) per request from INFO commandstats, and what a banned client costs Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from guard.testing import RedisServer, free_port, wait_for_http

HERE = Path(__file__).resolve().parent
VARIANTS = ("bare", "guard_memory", "guard_redis", "slowapi_redis")


def commands(port: int) -> tuple[int, int]:
    """(script calls, all commands) so far, not counting the INFO calls that read them."""
    stats = redis.Redis(port=port).info("commandstats")
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return scripts, sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def run_variant(variant: str, redis_url: str, seconds: int, connections: int, clients: int) -> dict:
    port = free_port()
    env = dict(os.environ, BENCH_REDIS_URL=redis_url, PYTHONPATH=str(HERE), CLIENTS=str(clients))
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
        wait_for_http(base + "/api/tracks/1", process=server)
        wrk = ["wrk", "-t1", f"-c{connections}", "-s", str(HERE / "wrk_clients.lua"), base]
        subprocess.run([*wrk[:2], "-d2s", *wrk[2:]], capture_output=True, check=True, env=env)  # warm up
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        before = commands(redis_port)
        out = subprocess.run(
            [*wrk[:2], f"-d{seconds}s", "--latency", *wrk[2:]], capture_output=True, text=True, check=True, env=env
        ).stdout
        after = commands(redis_port)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    return {
        "requests_per_s": rps,
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "latency_p50": p50,
        "latency_p99": p99,
        "redis_round_trips_per_request": round((after[0] - before[0]) / total, 3),
        "redis_commands_per_request": round((after[1] - before[1]) / total, 3),
    }


def banned_cost(redis_url: str, redis_port: int) -> dict:
    """Redis commands spent on requests from a client the guard has already banned."""
    import asyncio

    from guard.identity.address import ClientResolver
    from guard.policy.engine import Guard
    from guard.policy.rules import load_rules
    from guard.stores.redis import RedisStore

    async def main() -> dict:
        store = RedisStore.from_url(redis_url, timeout=1.0)
        guard = Guard(load_rules(HERE.parent / "rules" / "default.yaml"), store)
        client = ClientResolver().resolve({"client": ("192.0.2.1", 1), "headers": []})
        ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        track = 0
        while True:  # fetch distinct tracks until banned
            track += 1
            decision = await guard.decide(guard.facts(client, ua, f"/api/tracks/{track}"))
            if "banned" in decision.reason:
                break
        before = commands(redis_port)
        for n in range(1000):
            await guard.decide(guard.facts(client, ua, f"/api/tracks/{track + n}"))
        after = commands(redis_port)
        await store.close()
        return {"requests_after_ban": 1000, "redis_round_trips": after[0] - before[0], "banned_after_tracks": track}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2000, help="distinct clients in the load (0: every request new)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {'wrk' if tool == 'wrk' else 'redis-server'}")

    store = RedisServer().start()
    redis_port, redis_url = store.port, store.url
    try:
        # Rounds interleave the variants so that a noisy neighbour hurts all of them alike.
        rounds: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                rounds[v].append(run_variant(v, redis_url, args.seconds, args.connections, args.clients))
        results = {}
        for v, runs in rounds.items():
            runs.sort(key=lambda r: r["requests_per_s"])
            results[v] = dict(runs[len(runs) // 2], all_requests_per_s=[r["requests_per_s"] for r in runs])
        banned = banned_cost(redis_url, redis_port)
    finally:
        store.stop()
    bare = results["bare"]["requests_per_s"]
    for figures in results.values():
        figures["ratio_to_bare"] = round(figures["requests_per_s"] / bare, 3)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load": f"wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds (median), "
        + (f"{args.clients} clients" if args.clients else "every request a new client")
        + " (X-Forwarded-For via a trusted proxy), browser UA, a new track each request",
        "variants": results,
        "banned_client": banned,
        "targets": {"guard_memory": 0.90, "guard_redis": 0.80},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(report["load"])
    print(
        f"{'variant':15} {'req/s':>9} {'ratio':>6} {'p50':>8} {'p99':>8} {'non2xx':>7} {'trips/req':>9} {'cmds/req':>9}"
    )
    for name, f in results.items():
        print(
            f"{name:15} {f['requests_per_s']:9.0f} {f['ratio_to_bare']:6.3f} {f['latency_p50']:>8} "
            f"{f['latency_p99']:>8} {f['non_2xx']:7d} {f['redis_round_trips_per_request']:9.3f} "
            f"{f['redis_commands_per_request']:9.2f}"
        )
    print(f"banned client: {banned['redis_round_trips']} Redis round trips for {banned['requests_after_ban']} requests")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
