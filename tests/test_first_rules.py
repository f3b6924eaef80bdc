"""A newcomer's first rules file: it works without the sections they do not know of yet,
and every mistake in it is reported in one run, with its fix.

The files are the ones docs/rules.md shows (docs/samples/), copied to an empty folder the
way a user writes one next to their app.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support import GPTBOT, ROOT, run

from guard.middleware import GuardMiddleware
from guard.policy.rules import load_rules

SAMPLES = ROOT / "docs" / "samples"


def guard(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "guard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


def test_a_rules_file_without_catalogue_or_paths_passes_and_says_the_shipped_groups_apply(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "first.yaml", tmp_path / "rules.yaml")
    result = guard("check", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("rules.yaml: ok (2 rules, 5 path groups, ")
    assert lines[1:] == [
        "rules.yaml: no paths: the shipped path groups apply (directives, health, audio, content_api, pages)"
    ]
    policy = load_rules(tmp_path / "rules.yaml")
    assert policy.paths.classify("/tracks/7/stream").group == "audio"
    assert policy.exempt == {"directives", "health"}  # robots.txt stays readable by every crawler
    assert len(policy.catalogue.agents) > 250


def test_the_first_rules_file_blocks_a_training_crawler_and_serves_robots_txt(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "first.yaml", tmp_path / "rules.yaml")

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = GuardMiddleware(app, rules=tmp_path / "rules.yaml")

    async def get(path: str, ua: str) -> int:
        statuses: list[int] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b""}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"user-agent", ua.encode())],
            "client": ("198.51.100.7", 5000),
        }
        await middleware(scope, receive, send)
        return statuses[0]

    assert run(get("/tracks/1", GPTBOT)) == 403
    assert run(get("/robots.txt", GPTBOT)) == 200


def test_every_mistake_of_a_file_is_reported_in_one_run_each_with_its_fix(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "mistakes.yaml", tmp_path / "rules.yaml")
    result = guard("check", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [re.match(r"guard: error: rules\.yaml:(\d+):", line).group(1) for line in lines] == ["1", "1", "6", "6", "7"]
    text = result.stderr
    assert "'version' is required: add 'version: 1' as the first line" in text
    assert "use 'catalogue: shipped'" in text
    assert "unknown category 'ai-training'" in text  # checked against the shipped catalogue all the same
    assert "unknown path group 'page'" in text
    assert "'blok' is not one of" in text


def test_a_file_with_only_a_version_is_told_to_add_rules_or_extend_the_shipped_ones(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("version: 1\n")
    result = guard("check", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "guard: error: rules.yaml:1:1: 'rules' is required: add 'rules:' (a list; [] for none), "
        "or 'extends: default' to start from the shipped rules"
    )


def test_a_catalogue_beside_the_file_is_still_the_one_read_without_catalogue(tmp_path: Path) -> None:
    for name in ("agents.yaml", "ai-robots.json", "crawler-lists.json"):
        shutil.copy(ROOT / "rules" / name, tmp_path / name)
    shutil.copy(SAMPLES / "first.yaml", tmp_path / "rules.yaml")
    assert load_rules(tmp_path / "rules.yaml").catalogue.source == str(tmp_path / "agents.yaml")


def test_guard_init_and_the_readme_show_the_same_mounting_and_the_keys(tmp_path: Path) -> None:
    result = guard("init", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mount = next(line for line in result.stdout.splitlines() if "mount it:" in line)
    assert "app = GuardMiddleware(app, rules=" in mount
    readme = (ROOT / "README.md").read_text()
    assert "GuardMiddleware(app, rules=" in readme
    exports = re.findall(r"export (GUARD_\w+)=(\S+)", result.stdout)
    assert [name for name, _ in exports] == ["GUARD_SESSION_KEY", "GUARD_BUDGET_KEY"]
    assert all(len(key) >= 32 for _, key in exports)
    assert guard("check", "rules.yaml", cwd=tmp_path).returncode == 0


def test_guard_keygen_prints_fresh_keys_each_time(tmp_path: Path) -> None:
    first, second = guard("keygen", cwd=tmp_path), guard("keygen", cwd=tmp_path)
    keys = [re.findall(r"export GUARD_SESSION_KEY=(\S+)", r.stdout) for r in (first, second)]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]
    assert "GUARD_BUDGET_KEY=" in first.stdout


def test_commands_that_serve_no_traffic_say_nothing_of_the_session_key(tmp_path: Path) -> None:
    explain = guard("explain", "--ip", "198.51.100.7", "--path", "/tracks/1", "--ua", GPTBOT, cwd=tmp_path)
    check = guard("check", str(ROOT / "rules" / "default.yaml"), cwd=tmp_path)
    for result in (explain, check):
        assert result.returncode == 0, result.stderr
        assert "GUARD_SESSION_KEY" not in result.stderr and "random key" not in result.stderr
