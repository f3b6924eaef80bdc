"""Rules files that extend the shipped ones, ``guard init``, and the README's snippets outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import ROOT

from guard.errors import ConfigError
from guard.policy.rules import load_rules, ranges_dir

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLE_ADDRESS = "66.249.66.1"  # in Google's published googlebot ranges (shipped snapshot)


def write(folder: Path, text: str, name: str = "rules.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def ids(path: Path) -> list[str]:
    return [rule.id for rule in load_rules(path).rules]


SHIPPED = [rule.id for rule in load_rules(ROOT / "rules" / "default.yaml").rules]


def test_extends_default_inherits_everything_from_any_folder(tmp_path: Path) -> None:
    policy = load_rules(write(tmp_path, "version: 1\nextends: default\n"))
    assert [r.id for r in policy.rules] == SHIPPED
    assert ranges_dir(policy) == ROOT / "rules" / "ranges"  # the shipped catalogue's ranges came along
    assert len(policy.catalogue.agents) > 100


def test_rules_combine_by_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        extends: default
        rules:
          - id: partner
            match: {agent: GPTBot}
            action: allow
          - id: track-sprint
            match: {path: [audio]}
            limit: {key: ip_ua, distinct: track, max: 10, per: 1m}
            action: throttle
          - id: no-user-agent
            remove: true
          - id: late
            after: request-rate
            action: block
            match: {path: content_api}
          - id: ai-search
            before: ai-training
            match: {category: ai_search}
            action: block
        """,
    )
    policy = load_rules(path)
    got = [r.id for r in policy.rules if not r.id.startswith("canary")]  # guard's own canary rules lead
    expected = [i for i in SHIPPED if i != "no-user-agent" and not i.startswith("canary")]
    expected.remove("ai-search")
    expected.insert(expected.index("ai-training"), "ai-search")
    expected.insert(expected.index("request-rate") + 1, "late")
    assert got == ["partner", *expected]
    sprint = next(r for r in policy.rules if r.id == "track-sprint")
    assert sprint.limit is not None and sprint.limit.max == 10 and sprint.ban is None  # replaced whole


def test_paths_combine_by_name_and_sections_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        extends: default
        paths:
          downloads: [/download/]
          audio: ["/listen/{track}"]
        directives:
          content_usage: train-ai=y
        """,
    )
    policy = load_rules(path)
    assert next(iter(policy.paths.groups)) == "downloads"  # new groups come first
    assert policy.paths.classify("/listen/7").group == "audio"
    assert policy.paths.classify("/tracks/7/stream").group != "audio"  # the shipped patterns were replaced
    assert policy.content_usage == "train-ai=y"
    assert policy.x_robots_tag == "noai, noimageai"  # the rest of the section is inherited


def test_a_chain_of_files_and_a_relative_extends(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nextends: default\nrules:\n  - {id: no-user-agent, remove: true}\n", "base.yaml")
    (tmp_path / "site").mkdir()
    path = write(tmp_path / "site", "version: 1\nextends: ../base.yaml\nshadow: true\n")
    policy = load_rules(path)
    assert "no-user-agent" not in [r.id for r in policy.rules] and policy.shadow


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("version: 1\nextends: nowhere.yaml\n", 2, "extends 'nowhere.yaml': cannot read file"),
        ("version: 1\nextends: rules.yaml\n", 2, "deep"),
        ("version: 1\nextends: default\nrules:\n  - {id: nope, remove: true}\n", 4, "no inherited rule"),
        ("version: 1\nextends: default\nrules:\n  - {id: x, after: nope, action: block}\n", 4, "no rule 'nope'"),
        ("version: 1\nextends: default\nrules:\n  - id: x\n    action: explode\n", 5, "'explode'"),
        (
            "version: 1\nextends: default\nrules:\n  - id: x\n    match: {path: nowhere}\n    action: block\n",
            5,
            "nowhere",
        ),
        (
            "version: 1\ncatalogue: shipped\npaths: {pages: [/]}\nrules:\n  - {id: x, after: y, action: block}\n",
            5,
            "needs 'extends'",
        ),
        ("version: 1\nextends: [default]\n", 2, "'extends' names a rules file"),
    ],
)
def test_problems_point_at_the_line_of_the_extending_file(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert f"{path}:{line}:" in message and words in message, message


# -- outside the checkout: a user's project folder ----------------------------------------------------


def in_project(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``folder`` as the working directory, importing guard from this tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=120, env=env)


def test_guard_init_writes_a_file_that_passes_guard_check_and_verifies_googlebot(tmp_path: Path) -> None:
    made = in_project(tmp_path, sys.executable, "-m", "guard.ops.cli", "init", "config")
    assert made.returncode == 0, made.stderr
    checked = in_project(tmp_path, sys.executable, "-m", "guard.ops.cli", "check", "--strict", "config/rules.yaml")
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stderr
    explained = in_project(
        tmp_path,
        sys.executable,
        "-m",
        "guard.ops.cli",
        "explain",
        "--rules",
        "config/rules.yaml",
        "--ip",
        GOOGLE_ADDRESS,
        "--path",
        "/tracks/1",
        "--ua",
        GOOGLEBOT,
    )
    assert "verified by ip ranges" in explained.stdout and "ALLOW" in explained.stdout, explained.stdout
    again = in_project(tmp_path, sys.executable, "-m", "guard.ops.cli", "init", "config")
    assert again.returncode == 1 and "--force" in again.stderr


DRIVE = """
import asyncio, httpx, sys
sys.path.insert(0, ".")
from snippet import app

async def main():
    transport = httpx.ASGITransport(app=app, client=("{ip}", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
        for ua, path in {requests!r}:
            r = await client.get(path, headers={{"user-agent": ua}})
            print(r.status_code, path)

asyncio.run(main())
"""


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("number", range(len(readme_snippets())))
def test_the_readme_snippets_work_in_a_fresh_project_folder(tmp_path: Path, number: int) -> None:
    assert in_project(tmp_path, sys.executable, "-m", "guard.ops.cli", "init").returncode == 0  # as the README says
    (tmp_path / "snippet.py").write_text(readme_snippets()[number])
    gpt = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
    requests = [(gpt, "/tracks/1/stream"), (GOOGLEBOT, "/tracks/1"), (gpt, "/robots.txt")]
    script = DRIVE.format(ip=GOOGLE_ADDRESS, requests=requests)
    result = in_project(tmp_path, sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    statuses = [line.split()[0] for line in result.stdout.splitlines()]
    # GPTBot refused; a real Googlebot address is verified, so the page is not refused as spoofed
    # (the bare app answers 404); robots.txt comes from guard.
    assert statuses[0] == "403" and statuses[1] in ("200", "404") and statuses[2] == "200", result.stdout
