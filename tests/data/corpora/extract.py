"""Rebuild the User-Agent corpora in this folder from checkouts of their public sources.

    python3 tests/data/corpora/extract.py DEVICE_DETECTOR UAP_CORE CRAWLER_USER_AGENTS WELL_KNOWN_BOTS

Each argument is a git checkout (its HEAD commit and date go into the files' headers).
Only User-Agent strings are taken, one a line, deduplicated, in the sources' order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# device-detector's device fixtures, by the corpus they go to (file name before any "-n").
DEVICE_GROUPS = {
    "desktop": "dd_desktop_mobile",
    "smartphone": "dd_desktop_mobile",
    "tablet": "dd_desktop_mobile",
    "phablet": "dd_desktop_mobile",
    "feature_phone": "dd_desktop_mobile",
    "wearable": "dd_desktop_mobile",
    "clienthints": "dd_desktop_mobile",
    "camera": "dd_desktop_mobile",
    "peripheral": "dd_desktop_mobile",
    "unknown": "dd_desktop_mobile",
    "tv": "dd_tv_console_car",
    "console": "dd_tv_console_car",
    "car_browser": "dd_tv_console_car",
    "smart_display": "dd_tv_console_car",
    "smart_speaker": "dd_tv_console_car",
    "portable_media_player": "dd_tv_console_car",
    "mediaplayer": "dd_apps",
    "mobile_apps": "dd_apps",
    "podcasting": "dd_apps",
    "feed_reader": "dd_feed_readers",
    "clienthints-app": "dd_apps",
}
CLIENT_GROUPS = {
    "browser": "dd_desktop_mobile",
    "mobile_app": "dd_apps",
    "mediaplayer": "dd_apps",
    "pim": "dd_apps",
    "feed_reader": "dd_feed_readers",
    "library": "dd_libraries",
}
# Client types that go to a corpus of their own whatever the device.
TYPE_GROUPS = {"library": "dd_libraries", "feed reader": "dd_feed_readers"}
DESCRIBE = {
    "dd_desktop_mobile": "browsers and apps on desktops, phones, tablets, wearables (non-bot)",
    "dd_tv_console_car": "TVs, set-top boxes, consoles, car browsers, smart displays and speakers (non-bot)",
    "dd_apps": "mobile apps, podcast apps, media players and mail clients (non-bot)",
    "dd_feed_readers": "feed readers (non-bot; reported, not asserted: some are server-side fetchers)",
    "dd_libraries": "HTTP libraries and tools (a refusal corpus)",
    "dd_bots": "bots (a refusal corpus)",
}


def git_head(repo: Path) -> tuple[str, str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%H %cs"], capture_output=True, text=True)
    commit, date = out.stdout.split()
    return commit, date


def write(name: str, header: list[str], uas: Iterable[str]) -> None:
    seen: dict[str, None] = {}
    for ua in uas:
        ua = ua.strip()
        if ua and "\n" not in ua and not ua.startswith("#"):
            seen.setdefault(ua, None)
    lines = [f"# {line}" if line else "#" for line in header] + list(seen)
    (HERE / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{name}: {len(seen)}")


def device_detector(repo: Path) -> set[str]:
    commit, date = git_head(repo)
    groups: dict[str, list[str]] = {name: [] for name in DESCRIBE}
    for path in sorted((repo / "Tests" / "fixtures").glob("*.yml")):
        stem = path.stem
        base = stem if stem in DEVICE_GROUPS or stem == "bots" else stem.rsplit("-", 1)[0]
        for entry in yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) or []:
            ua = entry.get("user_agent")
            if not ua:
                continue
            if base == "bots" or entry.get("bot"):
                groups["dd_bots"].append(ua)
                continue
            kind = (entry.get("client") or {}).get("type") or ""
            groups[TYPE_GROUPS.get(kind) or DEVICE_GROUPS[base]].append(ua)
    for path in sorted((repo / "Tests" / "Parser" / "Client" / "fixtures").glob("*.yml")):
        for entry in yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) or []:
            groups[CLIENT_GROUPS[path.stem]].append(entry["user_agent"])
    for name, uas in groups.items():
        header = [
            f"device-detector's test fixtures: {DESCRIBE[name]}.",
            "Source: github.com/matomo-org/device-detector (LGPL-3.0), Tests/fixtures/*.yml and",
            f"Tests/Parser/Client/fixtures/*.yml, commit {commit} of {date}.",
            "Extracted by tests/data/corpora/extract.py; one User-Agent a line.",
        ]
        write(name, header, uas)
    return set(groups["dd_bots"])


def uap_core(repo: Path, bots: set[str]) -> None:
    from user_agents import parse

    commit, date = git_head(repo)
    spiders: set[str] = set()
    uas: list[str] = []
    for name in ("test_ua.yaml", "test_os.yaml", "test_device.yaml"):
        doc = yaml.load((repo / "tests" / name).read_text(encoding="utf-8"), Loader=LOADER)
        for case in doc["test_cases"]:
            ua = case["user_agent_string"]
            if case.get("family") == "Spider" and name == "test_device.yaml":
                spiders.add(ua)
            uas.append(ua)
    kept = [ua for ua in uas if ua not in spiders and ua not in bots and not parse(ua).is_bot]
    header = [
        "uap-core's test strings that are no bot's (not device family Spider in tests/test_device.yaml,",
        "not a bot by ua-parser's own regexes, not in device-detector's bot fixtures).",
        "Source: github.com/ua-parser/uap-core (Apache-2.0), tests/test_ua.yaml, tests/test_os.yaml,",
        f"tests/test_device.yaml, commit {commit} of {date}.",
        "Extracted by tests/data/corpora/extract.py; one User-Agent a line.",
    ]
    write("uap_core", header, kept)


def previews(cua: Path, wkb: Path) -> None:
    commit, date = git_head(cua)
    entries = json.loads((cua / "crawler-user-agents.json").read_text(encoding="utf-8"))
    uas = [ua for e in entries if "social-preview" in e.get("tags", []) for ua in e.get("instances", [])]
    wcommit, wdate = git_head(wkb)
    bots = json.loads((wkb / "well-known-bots.json").read_text(encoding="utf-8"))
    uas += [
        ua for b in bots if "preview" in b.get("categories", []) for ua in b.get("instances", {}).get("accepted", [])
    ]
    header = [
        "Link previewers' User-Agents: the instances of every entry tagged social-preview in",
        f"github.com/monperrus/crawler-user-agents (MIT), crawler-user-agents.json, commit {commit} of {date};",
        "then the accepted instances of every entry of category preview in",
        f"github.com/arcjet/well-known-bots (MIT), well-known-bots.json, commit {wcommit} of {wdate}.",
        "Extracted by tests/data/corpora/extract.py; one User-Agent a line.",
    ]
    write("previews", header, uas)


def main(argv: list[str]) -> None:
    dd, uap, cua, wkb = (Path(a) for a in argv)
    bots = device_detector(dd)
    uap_core(uap, bots)
    previews(cua, wkb)


if __name__ == "__main__":
    main(sys.argv[1:])
