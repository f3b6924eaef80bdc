"""bench/day.py reproduces: the same --seed gives the same figures to the request, and a run
without --save leaves the checkout as it was."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from support import ROOT

SAVED = ROOT / "bench" / "results" / "day.json"


def day(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_") and k != "PYTHONHASHSEED"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "day.py"), "--hours", "0.2", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def figures(stdout: str) -> list[str]:
    """The table lines (the first line holds the run's own duration)."""
    return stdout.splitlines()[1:-1]


def test_the_same_seed_gives_the_same_figures_and_only_save_writes(tmp_path: Path) -> None:
    before = hashlib.sha256(SAVED.read_bytes()).hexdigest()
    first = day("--seed", "3", "--out", str(tmp_path / "day.json"))
    second = day("--seed", "3")
    other = day("--seed", "4")
    assert figures(first) == figures(second)
    assert figures(first) != figures(other)  # the seed does decide the day
    report = json.loads((tmp_path / "day.json").read_text())
    assert report["requests"] > 5000 and report["seed"] == 3
    assert f"{report['requests']} requests" in first.splitlines()[0]
    assert second.splitlines()[-1].startswith("not saved (--save writes bench/results/day.json")
    assert first.splitlines()[-1] == f"saved to {tmp_path / 'day.json'}"
    assert hashlib.sha256(SAVED.read_bytes()).hexdigest() == before
