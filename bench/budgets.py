"""What the hour and day budgets cost per request: the shipped rules with and without them.

Usage: python bench/budgets.py [--requests 20000] [--save | --out FILE]

Audio requests from 2,000 listeners (each its own address, session and /24, a new track
each time: every budget is evaluated and recorded) go through ``Guard.decide`` in
process, on the memory store and on a Redis of its own (redis-server on a free loopback
port). Reported: microseconds per request with all the shipped rules, and with the
budget rules (every limit over an hour or more, and the session counts) taken out; and
for Redis, round trips and commands per request (INFO commandstats: the commands the
script runs are counted too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard.identity.ranges import HostingRanges  # noqa: E402
from guard.policy.engine import Guard  # noqa: E402
from guard.policy.limits import Budget  # noqa: E402
from guard.policy.rules import Policy, load_rules  # noqa: E402
from guard.stores.memory import MemoryStore  # noqa: E402

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0"


def without_budgets(policy: Policy) -> Policy:
    rules = [r for r in policy.rules if not isinstance(r.limit, Budget)]
    return dataclasses.replace(policy, rules=rules, _plans={})


async def per_request_us(guard: Guard, n: int, clock: list[float]) -> float:
    runs = []
    for repeat in range(3):
        started = time.perf_counter()
        for i in range(n):
            k = repeat * n + i
            ip = f"10.{k % 2000 // 250}.{k % 250}.{k % 2000 // 8 % 250 + 1}"
            client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
            facts = guard.facts(client, CHROME, f"/tracks/{k % 100_000 + 1}/stream")
            await guard.decide(facts)
            clock[0] += 0.01
        runs.append((time.perf_counter() - started) / n * 1e6)
    return round(statistics.median(runs), 1)


def redis_calls(port: int) -> tuple[int, int]:
    import redis

    stats = redis.Redis(port=port).info("commandstats")
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return scripts, sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def measure(policy: Policy, hosting: HostingRanges, redis_url: str, redis_port: int, n: int) -> dict:
    """Per-request cost of ``policy`` for audio requests, memory store then Redis."""
    from guard.stores.redis import RedisStore

    row: dict = {"limits_per_audio_request": len(policy.plan("unknown", None, "audio", False).limits)}
    clock = [1_800_000_000.0]
    memory = Guard(policy, MemoryStore(), clock=lambda: clock[0], hosting=hosting)
    row["memory_us"] = asyncio.run(per_request_us(memory, n, clock))

    async def on_redis() -> tuple[float, int, int]:
        store = RedisStore.from_url(redis_url, timeout=2.0)
        guard = Guard(policy, store, clock=lambda: clock[0], hosting=hosting)
        before = redis_calls(redis_port)
        us = await per_request_us(guard, n // 4, clock)
        after = redis_calls(redis_port)
        await store.close()
        return us, after[0] - before[0], after[1] - before[1]

    us, scripts, commands = asyncio.run(on_redis())
    sent = 3 * (n // 4)
    row.update(
        redis_us=us,
        redis_round_trips_per_request=round(scripts / sent, 3),
        redis_commands_per_request=round(commands / sent, 1),
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    saving.add_options(parser, "budgets")
    args = parser.parse_args()

    from guard.testing import RedisServer

    shipped = load_rules(ROOT / "rules" / "default.yaml")
    hosting = HostingRanges.from_directory(ROOT / "rules" / "ranges" / "hosting")
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "requests": args.requests, "path": "audio"}
    server = RedisServer().start()
    try:
        for name, policy in (("all shipped rules", shipped), ("without the budget rules", without_budgets(shipped))):
            server.client().flushall()
            results[name] = measure(policy, hosting, server.url, server.port, args.requests)
            print(name, results[name], flush=True)
    finally:
        server.stop()
    a, b = results["all shipped rules"], results["without the budget rules"]
    results["budget_cost_us"] = {
        "memory": round(a["memory_us"] - b["memory_us"], 1),
        "redis_in_process": round(a["redis_us"] - b["redis_us"], 1),
        "redis_commands": round(a["redis_commands_per_request"] - b["redis_commands_per_request"], 1),
    }
    saving.save(args, results)
    print("budget cost per audio request:", results["budget_cost_us"])


if __name__ == "__main__":
    main()
