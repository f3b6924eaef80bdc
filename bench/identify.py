"""Identification cost for the whole catalogue: microseconds per unseen and per cached User-Agent.

Usage: python bench/identify.py [--save | --out FILE]

Unseen: every lookup is a User-Agent string the identifier has never seen (real browser
strings with a version number made unique, crawler strings with a counter appended), so
the catalogue matcher runs. Times are CPU time of this process (time.process_time), so
that other work on a shared machine does not inflate them.
Cached: the same strings again. Targets: <= 5 us unseen, <= 1 us cached.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
_LAST_NUMBER = re.compile(r"(\d+)(\D*)$")


def sample_user_agents(n: int) -> list[str]:
    from guard.identity.catalogue import load_catalogue

    lines = (ROOT / "tests" / "data" / "browser_user_agents.txt").read_text().splitlines()
    browsers = [line for line in lines if line and not line.startswith("#")]
    crawlers = [a.example for a in load_catalogue(ROOT / "rules" / "agents.yaml").agents if a.example]
    out = []
    for i in range(n):
        # Nine in ten requests come from browsers; make each string unique so none is cached:
        # a crawler's gets a product appended, a browser's a last version number of its own
        # (as a new browser build would: the string keeps a browser's shape).
        if i % 10 == 0:
            out.append(f"{crawlers[i % len(crawlers)]} r/{i}")
        else:
            out.append(_LAST_NUMBER.sub(rf"\g<1>{i}\g<2>", browsers[i % len(browsers)]))
    return out


def per_call_us(fn, items: list[str], repeats: int) -> float:
    """Median over ``repeats`` runs of the mean time per call, in microseconds."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(item)
        runs.append((time.process_time() - start) / len(items) * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    saving.add_options(parser, "identify")
    args = parser.parse_args()

    from guard.identity.identify import Identifier
    from guard.policy.rules import load_rules

    policy = load_rules(ROOT / "rules" / "default.yaml")
    uas = sample_user_agents(args.n)

    unseen_runs = []
    for _ in range(5):
        identifier = Identifier(policy.catalogue, cache_size=args.n * 2)
        unseen_runs.append(per_call_us(identifier.from_user_agent, uas, 1))
        cached = per_call_us(identifier.from_user_agent, uas, 5)
    match_only = per_call_us(policy.catalogue.match, uas, 5)

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "catalogue_agents": len(policy.catalogue.agents),
        "user_agents": args.n,
        "unseen_us": round(statistics.median(unseen_runs), 3),
        "cached_us": round(cached, 3),
        "catalogue_match_only_us": round(match_only, 3),
        "targets": {"unseen_us": 5.0, "cached_us": 1.0},
    }
    saving.save(args, results)
    for key in ("unseen_us", "cached_us", "catalogue_match_only_us"):
        print(f"{key:26} {results[key]:8.3f}")


if __name__ == "__main__":
    main()
