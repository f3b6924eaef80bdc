"""Where a benchmark's figures go: bench/results/NAME.json only when asked (``--save``).

A run without ``--save`` or ``--out`` prints its figures and writes nothing, so running a
benchmark never changes the checkout; it says where the last saved figures are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def add_options(parser: argparse.ArgumentParser, name: str) -> None:
    """``--save`` (to bench/results/NAME.json) and ``--out FILE``."""
    parser.set_defaults(results_name=name)
    parser.add_argument("--save", action="store_true", help=f"write the figures to bench/results/{name}.json")
    parser.add_argument("--out", metavar="FILE", help="write the figures to FILE instead")


def target(args: argparse.Namespace) -> Path | None:
    """The file this run writes, or None."""
    if args.out:
        return Path(args.out)
    return RESULTS / f"{args.results_name}.json" if args.save else None


def save(args: argparse.Namespace, report: Any) -> None:
    """Write ``report`` where asked and say where the figures are."""
    path = target(args)
    if path is None:
        print(f"not saved (--save writes bench/results/{args.results_name}.json, the figures the docs quote)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved to {path}")
