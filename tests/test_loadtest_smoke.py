"""A CI-sized run of the staging load test (loadtests/run.py): real workers, Redis and locust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import ROOT


def test_load_test_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "run.py"),
            "--duration",
            "15",
            "--users",
            "24",
            "--workers",
            "2",
            "--spawn-rate",
            "24",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "load_summary.json").read_text())
    assert summary["listener_false_blocks"] == 0 and summary["listener_requests"] > 100
    assert summary["server_errors_5xx"] == 0
    assert summary["verified_googlebot_false_blocks"] == 0
    assert summary["content_obtained"]["spoofed googlebot"] == 0
    stealth = summary["content_obtained"]["stealth scraper"]
    assert stealth < summary["scraper_requests"]["stealth scraper"]  # stopped, not served everything
    assert (tmp_path / "load.html").exists() and (tmp_path / "load_stats.csv").exists()


def test_day_mix_smoke(tmp_path: Path) -> None:
    """The day mix with the guard's clock at 2880x (a day in 30 s): 20 s are ~16 hours."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "run.py"),
            "--day",
            "2880",
            "--duration",
            "20",
            "--users",
            "24",
            "--workers",
            "2",
            "--spawn-rate",
            "24",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "day_summary.json").read_text())
    assert summary["listener_false_blocks"] == 0 and summary["listener_requests"] > 100
    assert summary["server_errors_5xx"] == 0
    patient = summary["content_obtained"]["day patient scraper"]
    # Two patient scrapers (weights 20/2/1/1 of 24 users), each held to its session budgets
    # (300 tracks a day): as many requests as locust manages, never more than the budgets.
    assert 0 < patient <= 2 * 305
    assert summary["simulated_hours"] >= 15
