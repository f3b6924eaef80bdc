"""Range lookup cost: microseconds per verification with every shipped range file loaded.

Usage: python bench/ranges.py [--save | --out FILE]

Half the addresses fall inside an operator's ranges, half outside; IPv4 and IPv6 mixed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

from guard.identity.address import ClientResolver, parse_ip
from guard.identity.ranges import RangeVerifier

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    saving.add_options(parser, "ranges")
    args = parser.parse_args()

    verifier = RangeVerifier.from_directory(ROOT / "rules" / "ranges")
    resolver = ClientResolver()
    rng = random.Random(1)
    samples = []
    for i in range(args.n):
        if i % 4 == 0:
            text = f"66.249.{rng.randint(64, 79)}.{rng.randint(0, 255)}"
        elif i % 4 == 1:
            text = f"2001:4860:4801:{rng.randint(0, 0xFF):x}::{rng.randint(1, 0xFFFF):x}"
        elif i % 4 == 2:
            text = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        else:
            text = f"2a00:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        agent = ("Googlebot", "Bingbot", "Applebot", "GPTBot", "OAI-SearchBot")[i % 5]
        samples.append((agent, resolver.client(parse_ip(text), "")))

    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for agent, client in samples:
            verifier.verify(agent, client)
        runs.append((time.perf_counter() - start) / len(samples) * 1e6)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "range_files": len(verifier.ranges),
        "intervals": sum(len(r) for r in verifier.ranges.values()),
        "lookups": len(samples),
        "us_per_lookup": round(statistics.median(runs), 3),
        "inside_share": round(sum(bool(verifier.verify(a, c)) for a, c in samples) / len(samples), 3),
    }
    saving.save(args, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
