"""Memory under address rotation: a million distinct client addresses through the memory store.

Usage: python bench/memory.py [--addresses 1000000] [--max-entries 200000] [--save | --out FILE]

Each address (rotating through a /8, a new /24 every 256) with a browser User-Agent loads a
page without a session (the minting counters) and fetches a new track's audio with a
session of its own (the minute windows and every hour and day budget: per session,
address, /24, /16, sessions per address and subnet, User-Agents per session), so every
limit of the shipped rules creates entries.
Prints and saves the store's entry count and the process's resident memory (VmRSS) as it
goes: the count stops at the bound and memory levels off instead of growing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--max-entries", type=int, default=200_000)
    saving.add_options(parser, "memory")
    args = parser.parse_args()

    from guard.policy.engine import Guard
    from guard.policy.rules import load_rules
    from guard.sessions.tokens import Session
    from guard.stores.memory import MemoryStore

    policy = load_rules(ROOT / "rules" / "default.yaml")
    store = MemoryStore(args.max_entries)
    guard = Guard(policy, store)
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0"
    samples = [{"addresses": 0, "entries": 0, "rss_mib": round(rss_mib(), 1)}]
    step = args.addresses // 10

    async def run() -> None:
        for n in range(1, args.addresses + 1):
            address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            client = guard.resolver.resolve({"client": (address, 1)})
            track = n % 100000 + 1
            await guard.decide(guard.facts(client, ua, f"/tracks/{track}"))
            session = Session(f"s{n}", 1_800_000_000.0, state="page")
            await guard.decide(guard.facts(client, ua, f"/tracks/{track}/stream", session=session))
            if n % step == 0:
                samples.append({"addresses": n, "entries": len(store), "rss_mib": round(rss_mib(), 1)})
                print(samples[-1], flush=True)

    started = time.perf_counter()
    asyncio.run(run())
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "addresses": args.addresses,
        "max_entries": args.max_entries,
        "seconds": round(time.perf_counter() - started, 1),
        "samples": samples,
        "rss_growth_after_bound_mib": round(samples[-1]["rss_mib"] - samples[len(samples) // 2]["rss_mib"], 1),
    }
    saving.save(args, report)
    print(
        f"entries bounded at {samples[-1]['entries']} (max {args.max_entries}); RSS {samples[-1]['rss_mib']} MiB; "
        f"growth over the second half: {report['rss_growth_after_bound_mib']} MiB"
    )


if __name__ == "__main__":
    main()
