"""Rules files: the shipped one is valid; a bad one fails with file, line and reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import RULES

from guard.demo.app import create_app
from guard.errors import ConfigError
from guard.policy.rules import load_rules, parse_duration


def write_rules(tmp_path: Path, text: str) -> Path:
    shutil.copy(RULES.parent / "agents.yaml", tmp_path / "agents.yaml")
    shutil.copy(RULES.parent / "ai-robots.json", tmp_path / "ai-robots.json")
    shutil.copy(RULES.parent / "crawler-lists.json", tmp_path / "crawler-lists.json")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_HEAD = """\
version: 1
paths:
  audio: ["/tracks/{track}/stream"]
  pages: [/]
"""


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (
            GOOD_HEAD + "rules:\n  - id: x\n    action: explode\n",
            7,
            "action: 'explode' is not one of: allow, block, throttle or challenge",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    match: {category: robots}\n    action: block\n",
            7,
            "unknown category 'robots'",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    match: {path: [audio, video]}\n    action: block\n",
            7,
            "unknown path group 'video'",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: a\n    action: block\n  - id: a\n    action: allow\n",
            8,
            "duplicate rule id 'a'",
        ),
        (GOOD_HEAD + "rules:\n  - id: x\n    action: throttle\n", 7, "'throttle' needs a 'limit'"),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    limit: {key: ip, requests: 10, per: soon}\n    action: throttle\n",
            7,
            "limit.per: 'soon' is not a positive duration",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    limit:\n      key: planet\n      requests: 5\n      per: 1m\n"
            "    action: throttle\n",
            8,
            "limit.key: 'planet' is not one of: ip, ip_ua, subnet, session, provider, agent, fingerprint,"
            " or a network level",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    ban: {after: 3, within: 1m, for: 1h}\n    action: block\n",
            7,
            "no 'limit'",
        ),
        (
            GOOD_HEAD + "rules:\n  - id: x\n    action: block\n    colour: red\n",
            8,
            "unknown key 'colour' (expected one of: id, description,",
        ),
        (GOOD_HEAD + "rules:\n  - id: x\n    action: [block\n", 8, "started on line 7"),
        ("version: 2\nrules: []\n", 1, "'version: 1' is required"),
        (GOOD_HEAD.replace("pages: [/]", "pages: [nope]") + "rules: []\n", 4, "must start with '/'"),
    ],
)
def test_bad_rules_fail_with_file_line_and_reason(tmp_path: Path, body: str, line: int, reason: str) -> None:
    path = write_rules(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert err.value.file == str(path)
    assert err.value.line == line, str(err.value)
    assert reason in err.value.reason
    assert err.value.column is not None
    assert str(err.value) == f"{path}:{line}:{err.value.column}: {err.value.reason}"


def test_the_middleware_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    path = write_rules(tmp_path, GOOD_HEAD + "rules:\n  - id: x\n    action: explode\n")
    with pytest.raises(ConfigError, match=r"rules\.yaml:7:13: "):
        create_app(path)


def test_a_bad_catalogue_names_its_own_file_and_line(tmp_path: Path) -> None:
    path = write_rules(tmp_path, GOOD_HEAD + "rules: []\n")
    (tmp_path / "agents.yaml").write_text(
        "categories: {ai_training: x}\nagents:\n  - {name: A, operator: B, category: ai_training}\n"
        "  - {name: C, operator: D, category: nonsense}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert err.value.file.endswith("agents.yaml") and (err.value.line, err.value.column) == (4, 38)
    assert "unknown category 'nonsense'" in err.value.reason


def test_the_shipped_rules_are_valid() -> None:
    policy = load_rules(RULES)
    assert [r.id for r in policy.rules][:2] == ["ai-training", "ai-search"]
    assert [r.id for r in policy.rules][-2:] == ["canary", "canary-fingerprint"]  # guard's own, last
    assert policy.exempt == {"directives", "health"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guard.ops.cli", *args], capture_output=True, text=True, timeout=60)


def test_guard_check_exit_status(tmp_path: Path) -> None:
    ok = run_cli("check", str(RULES))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = write_rules(tmp_path, GOOD_HEAD + "rules:\n  - id: x\n    action: explode\n")
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    expected = f"{bad}:7:13: rule 'x': action: 'explode' is not one of: allow, block, throttle or challenge"
    assert result.stderr == f"guard: error: {expected}\n"


def test_guard_check_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1 and "cannot read file" in result.stderr


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("0", None),
        ("-1m", None),
        ("1 week", None),
        (True, None),
    ],
)
def test_durations(value, seconds) -> None:
    assert parse_duration(value) == seconds


def test_guard_check_warns_about_unreachable_rules(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        GOOD_HEAD
        + "rules:\n"
        + "  - id: everything\n    action: allow\n"
        + "  - id: too-late\n    match: {category: ai_training}\n    action: block\n",
    )
    result = run_cli("check", str(path))
    assert result.returncode == 0
    assert f"{path}:8: rule 'too-late' is unreachable: every request it matches is decided first by 'everything'" in (
        result.stderr
    )
    assert run_cli("check", "--strict", str(path)).returncode == 1
    assert "0 warnings" in run_cli("check", str(RULES)).stdout


def test_the_shipped_rules_match_the_json_schema() -> None:
    import jsonschema

    from guard.policy.reference import json_schema
    from guard.yamlfile import load_yaml

    jsonschema.Draft202012Validator(json_schema()).validate(load_yaml(RULES).data)
