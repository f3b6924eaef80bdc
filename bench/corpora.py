"""Who is served on the public User-Agent corpora (tests/data/corpora), in process.

Usage: python bench/corpora.py [--rules rules/default.yaml] [--out bench/results/corpora.json] [NAME ...]

Each string is one client (an address of its own): it loads a track page, then the track's API
record, then its audio with the session cookie the page gave it, as a browser does. Prints and
saves, per corpus, the share served in full (page, API and audio), the share served the page,
and the share refused audio and the API. Run it against another checkout's ``guard`` (with that
checkout's rules) to compare: ``PYTHONPATH=/path/to/other python bench/corpora.py --rules
/path/to/other/rules/default.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import FakeClock, corpus, walk

from guard.demo.app import create_app
from guard.policy.rules import load_rules

CORPORA = (
    "dd_desktop_mobile",
    "dd_tv_console_car",
    "dd_apps",
    "uap_core",
    "dd_feed_readers",
    "previews",
    "dd_bots",
    "dd_libraries",
)


def measure(rules: str, name: str) -> dict[str, object]:
    uas = corpus(name)
    app = create_app(load_rules(rules), clock=FakeClock())

    async def main() -> list:
        return [await walk(app, ua, n) for n, ua in enumerate(uas)]

    started = time.perf_counter()
    walks = asyncio.run(main())
    n = len(uas)
    return {
        "strings": n,
        "served": round(sum(w.served for w in walks) / n, 6),
        "pages": round(sum(w.page == 200 for w in walks) / n, 6),
        "refused_audio_and_api": round(sum(w.refused_content for w in walks) / n, 6),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="rules/default.yaml")
    parser.add_argument("--out", default="bench/results/corpora.json")
    parser.add_argument("names", nargs="*", default=list(CORPORA))
    args = parser.parse_args()
    results = {}
    for name in args.names:
        results[name] = figures = measure(args.rules, name)
        print(
            f"{name:18} {figures['strings']:6} strings  served {figures['served']:.2%}  pages {figures['pages']:.2%}"
            f"  refused audio+API {figures['refused_audio_and_api']:.2%}",
            flush=True,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
