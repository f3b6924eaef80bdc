"""One command for the staging load test: start, load, stop, report.

    python loadtests/run.py [--duration 120] [--users 80] [--workers 3] [--chaos] [--out loadtests/reports]

Starts a Redis of its own on loopback, the guarded demo with several uvicorn workers
sharing it (trusting the load generator as a proxy, so personas can have addresses of
their own), runs locust headless for a fixed time, stops everything, and writes CSV and
HTML reports plus summary.json and summary.txt. With --chaos, Redis is killed a third
of the way in and restarted at two thirds: the summary shows the fail-open window.
Traffic goes to 127.0.0.1 only; the run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from guard.testing import RedisServer, demo_process

HERE = Path(__file__).resolve().parent
#: The day mix: listeners and the scrapers that pace themselves or rotate (nothing else).
DAY_WEIGHTS = ",".join(
    f"{name}={weight}"
    for name, weight in {
        "Listener": 0,
        "HonestAICrawler": 0,
        "StealthScraper": 0,
        "RotatingScraper": 0,
        "RotatingScraperV6": 0,
        "SpoofedGooglebot": 0,
        "VerifiedGooglebot": 0,
        "DayListener": 20,
        "DayPatientScraper": 2,
        "DayUARotator": 1,
        "DaySubnetRotator": 1,
    }.items()
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=120, help="seconds of load")
    parser.add_argument("--users", type=int, default=80)
    parser.add_argument("--spawn-rate", type=float, default=20)
    parser.add_argument("--workers", type=int, default=3, help="uvicorn workers of the demo")
    parser.add_argument("--chaos", action="store_true", help="kill and restart Redis during the run")
    parser.add_argument("--weights", default="", help="persona weights, e.g. Listener=10,StealthScraper=1")
    parser.add_argument(
        "--day",
        type=float,
        default=0,
        metavar="SPEED",
        help="the day mix: the guard's clock runs SPEED times faster (96: a day in 15 minutes), Day* personas",
    )
    parser.add_argument("--out", default=str(HERE / "reports"))
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "chaos" if args.chaos else "day" if args.day else "load"
    store = RedisServer().start()
    env = {"GUARD_REDIS_URL": store.url, "GUARD_TRUSTED_PROXIES": "127.0.0.1/32"}
    if args.day:
        env["GUARD_DEMO_DAY_SPEED"] = str(args.day)
        # The day mix measures budgets, not outages (--chaos does): on a starved machine a
        # 50 ms Redis call times out, each worker counts alone (fail open) and the shared
        # budgets are not what is being measured. A patient timeout keeps counting shared.
        rules = out / "day_rules.yaml"
        rules.write_text("version: 1\nextends: default\nredis: {timeout: 2s}\n")
        env["GUARD_RULES"] = str(rules)
        args.weights = args.weights or DAY_WEIGHTS
    chaos: dict[str, float] = {}
    try:
        with demo_process("--workers", str(args.workers), env=env) as base:
            run_locust(args, out, name, base, store, chaos)
    finally:
        store.stop()

    summary = summarise(out, name, args, chaos)
    (out / f"{name}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = render(summary)
    (out / f"{name}_summary.txt").write_text(text)
    print(text)
    return 0 if summary["listener_false_blocks"] == 0 and summary["server_errors_5xx"] == 0 else 1


def run_locust(args: argparse.Namespace, out: Path, name: str, base: str, store: RedisServer, chaos: dict) -> None:
    """Locust, headless, for the run's duration (with the chaos thread when asked)."""
    started = time.monotonic()
    if args.chaos:
        threading.Thread(target=_chaos, args=(store, args.duration, started, chaos), daemon=True).start()
    locust_env = dict(os.environ, LOADTEST_SUMMARY=str(out / f"{name}_tally.json"), LOADTEST_WEIGHTS=args.weights)
    if args.day:
        locust_env["LOADTEST_DAY_SPEED"] = str(args.day)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--host",
            base,
            "-u",
            str(args.users),
            "-r",
            str(args.spawn_rate),
            "-t",
            f"{args.duration}s",
            "--stop-timeout",
            "5",
            "--csv",
            str(out / name),
            "--html",
            str(out / f"{name}.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=locust_env,
        check=False,
        timeout=args.duration + 120,
        stdout=subprocess.DEVNULL,
    )


def _chaos(store: RedisServer, duration: int, started: float, chaos: dict[str, float]) -> None:
    time.sleep(duration / 3)
    store.kill()
    chaos["redis_killed_at_s"] = round(time.monotonic() - started, 1)
    time.sleep(duration / 3)
    store.start()
    chaos["redis_restarted_at_s"] = round(time.monotonic() - started, 1)
    client = redis.Redis(port=store.port)
    while time.monotonic() - started < duration:  # shared counting is back when keys reappear
        if client.dbsize() > 0:
            chaos["shared_counting_resumed_at_s"] = round(time.monotonic() - started, 1)
            break
        time.sleep(0.1)


def summarise(out: Path, name: str, args: argparse.Namespace, chaos: dict[str, float]) -> dict:
    tally = json.loads((out / f"{name}_tally.json").read_text())
    with open(out / f"{name}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    scrapers = ("stealth scraper", "rotating scraper v4", "rotating scraper v6", "spoofed googlebot")
    if args.day:
        scrapers = ("day patient scraper", "day ua rotator", "day subnet rotator")
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "duration_s": args.duration,
        "users": args.users,
        "uvicorn_workers": args.workers,
        "requests": int(total["Request Count"]),
        "requests_per_s": round(float(total["Requests/s"]), 1),
        "latency_p50_ms": float(total["50%"]),
        "latency_p99_ms": float(total["99%"]),
        "server_errors_5xx": tally.get("5xx", 0),
        "listener_false_blocks": tally.get("listener false block", 0) + tally.get("day listener false block", 0),
        "verified_googlebot_false_blocks": tally.get("verified googlebot false block", 0),
        "listener_requests": sum(
            v for k, v in tally.items() if k.startswith(("listener status", "day listener status"))
        ),
        "content_obtained": {p: tally.get(f"{p} content obtained", 0) for p in scrapers},
        "scraper_requests": {p: sum(v for k, v in tally.items() if k.startswith(f"{p} status")) for p in scrapers},
        "ai_crawler_requests": sum(v for k, v in tally.items() if k.startswith("ai crawler status")),
    }
    if args.day:
        summary["day_speed"] = args.day
        summary["simulated_hours"] = round(args.duration * args.day / 3600, 1)
    if args.chaos:
        summary["chaos"] = chaos
        if "redis_killed_at_s" in chaos and "shared_counting_resumed_at_s" in chaos:
            summary["fail_open_window_s"] = round(chaos["shared_counting_resumed_at_s"] - chaos["redis_killed_at_s"], 1)
    return summary


def render(s: dict) -> str:
    lines = [
        f"guard load test, {s['date']}: {s['users']} users for {s['duration_s']} s, {s['uvicorn_workers']} uvicorn "
        f"workers sharing one Redis",
        f"  requests            {s['requests']} ({s['requests_per_s']} /s), p50 {s['latency_p50_ms']:.0f} ms, "
        f"p99 {s['latency_p99_ms']:.0f} ms",
        f"  5xx                 {s['server_errors_5xx']}   (must be 0)",
        f"  listener false blocks {s['listener_false_blocks']} of {s['listener_requests']} requests   (must be 0)",
        f"  verified Googlebot false blocks {s['verified_googlebot_false_blocks']}",
        "  content obtained by scrapers (metadata and audio served / requests made, pages included):",
    ]
    for persona, got in s["content_obtained"].items():
        lines.append(f"    {persona:<22} {got:>6} / {s['scraper_requests'][persona]}")
    lines.append(f"  AI crawler requests {s['ai_crawler_requests']} (robots.txt and ai.txt only)")
    if "day_speed" in s:
        lines.append(f"  day mix: the guard's clock ran {s['day_speed']:g}x: {s['simulated_hours']} simulated hours")
    if "chaos" in s:
        c = s["chaos"]
        lines.append(
            f"  chaos: Redis killed at {c.get('redis_killed_at_s')} s, restarted at "
            f"{c.get('redis_restarted_at_s')} s, shared counting resumed at "
            f"{c.get('shared_counting_resumed_at_s')} s: fail-open window {s.get('fail_open_window_s')} s"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
