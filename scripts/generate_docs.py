"""Regenerate what the docs show from its sources: command output, and the saved figures.

    python scripts/generate_docs.py          # rewrite what is stale
    python scripts/generate_docs.py --check  # exit 1 if anything is stale, and say what

* docs/samples/*.txt: what `guard check` prints for each rules file in docs/samples/
  (run from that folder), and what uvicorn prints when an app's rules file is bad
  (``startup.txt``). The docs include them (``--8<--``), so a reworded message changes
  the docs with it.
* The tables between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in
  README.md, docs/performance.md and docs/budgets.md, from the saved figures in
  bench/results/.

tests/test_docs.py fails while anything checked in is stale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "docs" / "samples"
CHECKED = ("first.yaml", "mistakes.yaml", "overlapping.yaml")
APP = """\
from starlette.applications import Starlette

from guard import GuardMiddleware

app = GuardMiddleware(Starlette(), rules="rules.yaml")
"""


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    return {**clean, "PYTHONPATH": os.pathsep.join([str(ROOT), clean.get("PYTHONPATH", "")]), "COLUMNS": "200"}


def check_output(name: str) -> str:
    """``$ guard check NAME`` and what it prints (stdout, then stderr)."""
    run = subprocess.run(
        [sys.executable, "-m", "guard", "check", name],
        cwd=SAMPLES,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    return f"$ guard check {name}\n{run.stdout}{run.stderr}"


def startup_output() -> str:
    """What uvicorn prints from its first error on, when the app's rules file is mistakes.yaml."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "app.py").write_text(APP)
        (Path(folder) / "rules.yaml").write_text((SAMPLES / "mistakes.yaml").read_text())
        run = subprocess.run(
            [sys.executable, "-m", "uvicorn", "app:app", "--port", "0"],
            cwd=folder,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
    lines = run.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("ERROR:"))
    return "$ uvicorn app:app\n" + "\n".join(lines[first:]) + "\n"


def samples() -> dict[Path, str]:
    """Each sample file and what it should hold."""
    out = {SAMPLES / f"{Path(name).stem}.check.txt": check_output(name) for name in CHECKED}
    out[SAMPLES / "startup.txt"] = startup_output()
    return out


def _results(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())


def day_table() -> str:
    """What the simulated day stops: each group of people, then each scraper against its target."""
    day = _results("day")
    rows = ["| who, over one simulated day | what they got | target |", "| --- | ---: | ---: |"]
    for name, group in day["people"].items():
        rows.append(f"| people: {name} | {group['stopped']:,} of {group['people']:,} stopped | none stopped |")
    for scraper in day["scrapers"]:
        over = "" if scraper["meets_target"] else " **over**"
        rows.append(f"| scraper: {scraper['scraper']} | {scraper['tracks']:,} tracks{over} | {scraper['target']:,} |")
    return "\n".join(rows)


def day_people_table() -> str:
    """Each group of people of the simulated day, with its requests."""
    day = _results("day")
    rows = ["| people | people | stopped | requests | refused |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, g in day["people"].items():
        rows.append(f"| {name} | {g['people']:,} | {g['stopped']:,} | {g['requests']:,} | {g['refused']:,} |")
    return "\n".join(rows)


def day_scrapers_table() -> str:
    """Each scraper of the simulated day: what it got, and what it cost it."""
    day = _results("day")
    rows = [
        "| scraper | tracks obtained | target | requests | sessions | challenges solved |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in day["scrapers"]:
        over = "" if r["meets_target"] else " **over**"
        rows.append(
            f"| {r['scraper']} | {r['tracks']:,}{over} | {r['target']:,} | {r['requests']:,} | {r['sessions']:,} "
            f"| {r.get('challenges', 0):,} |"
        )
    return "\n".join(rows)


VARIANTS = {
    "bare": "the demo app alone",
    "guard_memory": "guard, memory store",
    "guard_redis": "guard, Redis",
    "slowapi_memory": "slowapi, memory (1 limit)",
    "slowapi_redis": "slowapi, Redis (1 limit)",
}


def speed_table() -> str:
    """Throughput against the bare app, and what each variant adds to p99 at light load."""
    variants = _results("throughput")["variants"]
    rows = [
        "| variant | requests/s | of bare | p99 added, light load | Redis round trips per request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in VARIANTS.items():
        v = variants.get(key)
        if v is None:
            continue
        added = f"+{v['light']['p99_added_ms']:.2f} ms" if key != "bare" and "light" in v else ""
        trips = f"{v['redis_round_trips_per_request']:.2f}" if "redis" in key else ""
        rows.append(f"| {label} | {v['requests_per_s']:,.0f} | {v['fraction_of_bare']:.2f} | {added} | {trips} |")
    return "\n".join(rows)


def throughput_table() -> str:
    """Every figure of each variant of bench/throughput.py."""
    variants = _results("throughput")["variants"]
    rows = [
        "| variant | requests/s | of bare | p50 | p99 | p99 added | p99 added, light load | Redis round trips "
        "/ request | Redis commands / request | Redis time / request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in VARIANTS.items():
        v = variants.get(key)
        if v is None:
            continue
        redis = "redis" in key
        cells = [
            label,
            f"{v['requests_per_s']:,.0f}",
            f"{v['fraction_of_bare']:.2f}",
            f"{v['p50_ms']:.1f} ms",
            f"{v['p99_ms']:.1f} ms",
            f"+{v['p99_added_ms']:.1f} ms" if key != "bare" else "",
            f"+{v['light']['p99_added_ms']:.2f} ms" if key != "bare" and "light" in v else "",
            f"{v['redis_round_trips_per_request']:.3f}" if redis else "",
            f"{v['redis_commands_per_request']:.1f}" if redis else "",
            f"{v['redis_cpu_us_per_request']:.0f} µs" if redis else "",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stages_table() -> str:
    """Microseconds per request in each stage of the request path (bench/stages.py, memory store)."""
    memory = _results("stages")["memory"]
    kinds = ("all", "page", "api", "audio")
    rows = ["| stage | " + " | ".join(kinds) + " |", "| --- |" + " ---: |" * len(kinds)]
    for stage in memory["stages_us"]["all"]:
        if stage == "sum":
            continue
        rows.append(f"| {stage} | " + " | ".join(f"{memory['stages_us'][k][stage]:.1f}" for k in kinds) + " |")
    rows.append("| **guard, uninstrumented** | " + " | ".join(f"{memory['guard_us'][k]:.0f}" for k in kinds) + " |")
    return "\n".join(rows)


TABLES = {
    "day": day_table,
    "day_people": day_people_table,
    "day_scrapers": day_scrapers_table,
    "speed": speed_table,
    "throughput": throughput_table,
    "stages": stages_table,
}
WITH_TABLES = (ROOT / "README.md", ROOT / "docs" / "performance.md", ROOT / "docs" / "budgets.md")


def with_tables(text: str) -> str:
    """``text`` with each generated table replaced by its current form."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- generated:{name} -->\n{TABLES[name]()}\n<!-- /generated:{name} -->"

    return re.sub(r"<!-- generated:(\w+) -->\n.*?<!-- /generated:\1 -->", fill, text, flags=re.S)


def generated() -> dict[Path, str]:
    """Every generated file and what it should hold."""
    out = samples()
    for path in WITH_TABLES:
        if path.exists():
            out[path] = with_tables(path.read_text())
    return out


def main(argv: list[str]) -> int:
    wanted = generated()
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: python scripts/generate_docs.py rewrites it", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
