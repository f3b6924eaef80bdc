"""Rules loading: milliseconds to load, validate and compile the shipped rules, in process
and as `guard check` (a fresh interpreter, imports included).

Usage: python bench/rules.py [--rules FILE] [--rounds 20] [--save | --out FILE]

Loading happens at start-up and on each reload, never per request; this watches that
validation stays cheap. The request path itself is measured by identify.py, ranges.py and
throughput.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "default.yaml"


def load_ms(rules: Path, rounds: int) -> list[float]:
    from guard.policy.rules import load_rules

    load_rules(rules)  # imports and caches warm
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        load_rules(rules)
        runs.append((time.perf_counter() - start) * 1e3)
    return runs


def check_ms(rules: Path, rounds: int) -> list[float]:
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "guard.ops.cli", "check", str(rules)], check=True, capture_output=True)
        runs.append((time.perf_counter() - start) * 1e3)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=RULES)
    parser.add_argument("--rounds", type=int, default=20)
    saving.add_options(parser, "rules")
    args = parser.parse_args()
    loads = load_ms(args.rules, args.rounds)
    checks = check_ms(args.rules, max(3, args.rounds // 4))
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "rules": str(args.rules),
        "load_rules_ms_median": round(statistics.median(loads), 2),
        "load_rules_ms_min": round(min(loads), 2),
        "guard_check_ms_median": round(statistics.median(checks), 1),
        "guard_check_ms_min": round(min(checks), 1),
    }
    saving.save(args, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
