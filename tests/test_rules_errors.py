"""Bad rules files: `guard check` and loading say the same `file:line:col: reason`, on the right line.

Each case is a kind of mistake an operator makes; the message must name the line (and
column) of the offending key or value, say what is accepted, and hold no Python repr.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from support import RULES

from guard.errors import ConfigError
from guard.policy import model
from guard.policy.limits import KEY_KINDS
from guard.policy.reference import json_schema_text, markdown_reference
from guard.policy.rules import load_rules

ROOT = Path(__file__).resolve().parents[1]
HEAD = 'version: 1\npaths:\n  audio: ["/tracks/{track}/stream"]\n  pages: [/]\n'  # 4 lines
RULE = "rules:\n  - id: x\n"  # lines 5 and 6

CASES = {
    "yaml syntax": (
        HEAD + RULE + "    action: [block\n",
        (8, 1),
        "YAML syntax: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started on line 7)",
    ),
    "duplicate key": (HEAD + "rules: []\nrules: []\n", (6, 1), "duplicate key 'rules' (first on line 5)"),
    "empty file": ("", (1, 1), "a rules file is a mapping (version, paths, rules, ...)"),
    "not a mapping": ("- version: 1\n", (1, 1), "a rules file is a mapping (version, paths, rules, ...)"),
    "wrong version": ("version: 2\nrules: []\n", (1, 10), "'version: 1' is required (the only version so far)"),
    "unknown top-level key": (
        HEAD + "rule:\n  - id: x\nrules: []\n",
        (5, 1),
        "unknown key 'rule' (expected one of: version, extends, catalogue, paths, exempt, apps, verify,"
        " reverse_dns, signatures, shadow, metrics, log, clients, subnets, memory, redis, directives, consent,"
        " sessions, pacing, private_tokens, canaries, fingerprints, rules)",
    ),
    "unknown section key": (
        HEAD + "redis:\n  url: redis://127.0.0.1:6379\n  timeuot: 50ms\nrules: []\n",
        (7, 3),
        "redis: unknown key 'timeuot' (expected one of: url, namespace, timeout, fail)",
    ),
    "unknown rule key": (
        HEAD + RULE + "    action: block\n    colour: red\n",
        (8, 5),
        "rule 'x': unknown key 'colour' (expected one of: id, description, match, action, limit, ban, reason, shadow,"
        " after, before, remove)",
    ),
    "unknown match key": (
        HEAD + RULE + "    match: {categroy: ai_training}\n    action: block\n",
        (7, 13),
        "rule 'x': match: unknown key 'categroy' (expected one of: category, agent, path, user_agent, session,"
        " network)",
    ),
    "unknown limit key": (
        HEAD + RULE + "    limit: {key: ip, requests: 5, per: 1m, burts: 3}\n    action: throttle\n",
        (7, 44),
        "rule 'x': limit: unknown key 'burts' (expected one of: key, per, requests, burst, distinct, max)",
    ),
    "bad consent price": (
        HEAD + "consent:\n  source: redis\n  price: 5 dollars\nrules: []\n",
        (7, 10),
        "consent.price: price '5 dollars' is not 'CUR amount', e.g. 'USD 0.01'",
    ),
    "consent file missing": (
        HEAD + "consent: {source: file}\nrules: []\n",
        (5, 10),
        "consent.file: 'source: file' needs the consent 'file'",
    ),
    "bad artist path": (
        HEAD + "consent:\n  source: app\n  artist_paths: [/artists/*]\nrules: []\n",
        (7, 18),
        "consent.artist_paths[0]: '/artists/*' is not an artist path: it starts with '/' and names '{artist}' once,"
        " e.g. /artists/{artist}",
    ),
    "wrong type": (
        HEAD + "shadow: yes please\nrules: []\n",
        (5, 9),
        "shadow: expected true or false, got 'yes please'",
    ),
    "number out of range": (
        HEAD + "subnets: {ipv4: 40}\nrules: []\n",
        (5, 17),
        "subnets.ipv4: 40 is out of range (1 to 32)",
    ),
    "bad duration": (
        HEAD + RULE + "    limit: {key: ip, requests: 10, per: 1 minute}\n    action: throttle\n",
        (7, 41),
        "rule 'x': limit.per: '1 minute' is not a positive duration such as 250ms, 30s, 10m, 1h, 1d"
        " (a bare number is seconds)",
    ),
    "bad CIDR": (
        HEAD + "metrics:\n  path: /metrics\n  allow: [127.0.0.1/32, 10.0.0.0/33]\nrules: []\n",
        (7, 25),
        "metrics.allow[1]: '10.0.0.0/33' is not an address or CIDR (such as 10.0.0.0/8 or 2001:db8::/32)",
    ),
    "missing catalogue": (
        HEAD + "catalogue: nothere.yaml\nrules: []\n",
        (5, 12),
        "catalogue 'nothere.yaml': cannot read file: No such file or directory"
        " (use 'catalogue: shipped' for the catalogue that comes with guard)",
    ),
    "unknown action": (
        HEAD + RULE + "    action: explode\n",
        (7, 13),
        "rule 'x': action: 'explode' is not one of: allow, block, throttle or challenge",
    ),
    "sessions require an unknown group": (
        HEAD + "sessions:\n  issue: pages\n  require: [audio, video]\nrules: []\n",
        (7, 20),
        "sessions.require[1]: unknown path group 'video' (known: audio, pages)",
    ),
    "cross-site cookie without secure": (
        HEAD + "sessions:\n  issue: pages\n  require: audio\n  cookie: {same_site: None, secure: false}\nrules: []\n",
        (8, 37),
        "sessions.cookie.secure: a cross-site cookie must be Secure (browsers refuse it otherwise): 'secure' is"
        " true or auto",
    ),
    "challenge too hard": (
        HEAD + "sessions:\n  issue: pages\n  require: audio\n  challenge: {difficulty: 40}\nrules: []\n",
        (8, 27),
        "sessions.challenge.difficulty: 40 is out of range (1 to 32)",
    ),
    "unknown session state": (
        HEAD + RULE + "    match: {session: new}\n    action: challenge\n",
        (7, 22),
        "rule 'x': match.session: 'new' is not one of: none, fresh, page or proven",
    ),
    "unknown category": (
        HEAD + RULE + "    match: {category: robots}\n    action: block\n",
        (7, 23),
        "rule 'x': match.category: unknown category 'robots' (known: ai_assistant, ai_search, ai_training, app,"
        " archiver, crawler, http_client, media_player, monitoring, padded, scraping_tool, search_engine, seo,"
        " social_preview, spoofed, unknown, unknown_bot, unknown_preview, verifying)",
    ),
    "unknown agent": (
        HEAD + RULE + "    match: {agent: [GPTBot, GPTBott]}\n    action: block\n",
        (7, 29),
        "rule 'x': match.agent[1]: unknown agent 'GPTBott' (did you mean GPTBot?)",
    ),
    "unknown path group": (
        HEAD + RULE + "    match:\n      path: [audio, video]\n    action: block\n",
        (8, 21),
        "rule 'x': match.path[1]: unknown path group 'video' (known: audio, other, pages)",
    ),
    "duplicate id": (
        HEAD + "rules:\n  - id: a\n    action: block\n  - id: a\n    action: allow\n",
        (8, 9),
        "rule 'a': id: duplicate rule id 'a' (first on line 6)",
    ),
    "missing id": (HEAD + "rules:\n  - action: block\n", (6, 5), "rules[0]: 'id' is required"),
    "bad id": (
        HEAD + "rules:\n  - id: Block Bots\n    action: block\n",
        (6, 9),
        "rule 'Block Bots': id: 'Block Bots' is not a valid name (lower-case letters, digits, - _ .)",
    ),
    "bad path pattern": (
        HEAD.replace("pages: [/]", "pages: [/, tracks]") + "rules: []\n",
        (4, 14),
        "paths.pages[1]: path pattern 'tracks' must start with '/'",
    ),
    "bad placeholder": (
        HEAD.replace("{track}/stream", "{id}/stream") + "rules: []\n",
        (3, 11),
        "paths.audio[0]: path pattern '/tracks/{id}/stream': the only placeholder is {track} (or {track:TYPE})",
    ),
    "reserved group name": (
        HEAD.replace("pages:", "other:") + "rules: []\n",
        (4, 3),
        "paths: 'other' is the implicit group of paths no group matches; choose another name",
    ),
    "limit with both distinct and requests": (
        HEAD + RULE + "    limit: {key: ip, requests: 10, per: 1m, distinct: track, max: 5}\n    action: throttle\n",
        (7, 55),
        "rule 'x': limit.distinct: a limit counts either 'distinct' values or 'requests', not both",
    ),
    "limit counting nothing": (
        HEAD + RULE + "    limit: {key: ip, per: 1m}\n    action: throttle\n",
        (7, 12),
        "rule 'x': limit.requests: 'requests' is required (or 'distinct: track' with 'max')",
    ),
    "ban without limit": (
        HEAD + RULE + "    ban: {after: 3, within: 1m, for: 1h}\n    action: block\n",
        (7, 10),
        "rule 'x': ban: 'ban' escalates a limit; this rule has no 'limit'",
    ),
    "client ban scope on an address key": (
        HEAD
        + RULE
        + "    limit: {key: ip, distinct: track, max: 5, per: 1m}\n"
        + "    ban: {after: 3, within: 1m, for: 1h, scope: client}\n    action: throttle\n",
        (8, 49),
        "rule 'x': ban.scope: scope 'client' is for limits keyed ip_ua or session, not ip",
    ),
    "unknown ban scope": (
        HEAD + RULE + "    limit: {key: ip, requests: 5, per: 1m}\n"
        "    ban: {after: 3, within: 1m, for: 1h, scope: planet}\n    action: throttle\n",
        (8, 49),
        "rule 'x': ban.scope: 'planet' is not one of: client, address or subnet",
    ),
    "unknown forwarded header": (
        HEAD + "clients: {forwarded: cf-connecting-ip}\nrules: []\n",
        (5, 22),
        "clients.forwarded: 'cf-connecting-ip' is not one of: x-forwarded-for, forwarded or x-real-ip",
    ),
    "throttle without limit": (
        HEAD + RULE + "    action: throttle\n",
        (7, 13),
        "rule 'x': action: 'throttle' needs a 'limit' (it answers 429 with the time to wait)",
    ),
    "client wider than subnet": (
        HEAD + "clients: {ipv4: 16}\nrules: []\n",
        (5, 17),
        "clients.ipv4: a client is at most a subnet: at least 24",
    ),
    "multi-line header": (
        HEAD + 'directives: {x_robots_tag: "noai\\nX-Evil: 1"}\nrules: []\n',
        (5, 28),
        "directives.x_robots_tag: a header value is one line",
    ),
    "tdmrep neither flag nor mapping": (
        HEAD + "directives: {tdmrep: maybe}\nrules: []\n",
        (5, 22),
        "directives.tdmrep: expected true or false, got 'maybe'",
    ),
    "canary range upside down": (
        HEAD + "canaries:\n  range: [20, 10]\nrules: []\n",
        (6, 10),
        "canaries.range: 'range' is [low, high] with 0 <= low <= high",
    ),
    "canary link without its id": (
        HEAD + "canaries:\n  links: [/api/tracks/]\nrules: []\n",
        (6, 11),
        "canaries.links[0]: a canary link names the id: {id}",
    ),
    "fingerprint header not a name": (
        HEAD + "fingerprints:\n  header: 'x ja4'\nrules: []\n",
        (6, 11),
        "fingerprints.header: 'x ja4' is not a header name (letters, digits and -)",
    ),
}


def write(tmp_path: Path, text: str) -> Path:
    shutil.copy(RULES.parent / "agents.yaml", tmp_path / "agents.yaml")
    shutil.copy(RULES.parent / "ai-robots.json", tmp_path / "ai-robots.json")
    shutil.copy(RULES.parent / "crawler-lists.json", tmp_path / "crawler-lists.json")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def guard_check(*paths: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "guard.ops.cli", "check", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], list[str]]:
    """Every case in its own folder, and what one `guard check` of all of them printed."""
    paths = {kind: write(tmp_path_factory.mktemp("case"), text) for kind, (text, _, _) in CASES.items()}
    result = guard_check(*paths.values())
    assert result.returncode == 1 and result.stdout == ""
    return paths, result.stderr.splitlines()


@pytest.mark.parametrize("kind", list(CASES))
def test_check_and_loading_say_the_same_line(checked: tuple[dict[str, Path], list[str]], kind: str) -> None:
    _text, (line, column), reason = CASES[kind]
    paths, printed = checked
    path = paths[kind]
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    expected = f"{path}:{line}:{column}: {reason}"
    assert str(err.value) == expected
    assert (err.value.line, err.value.column, err.value.reason) == (line, column, reason)
    # `guard check` printed exactly that line for this file, and nothing else about it
    assert [p for p in printed if str(path) in p] == [f"guard: error: {expected}"]


def test_no_python_reprs_in_any_message() -> None:
    for _text, _where, reason in CASES.values():
        assert not re.search(r"\bNone\b|\bTrue\b|\bFalse\b|\{'|\[\'|<class", reason), reason


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + "redis: {timeout: soon}\n"
        + "rules:\n"
        + "  - id: y\n    match: {category: robots}\n    action: block\n"
        + "  - id: x\n    action: explode\n",
    )
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert [(p.line, p.column) for p in err.value.problems] == [(5, 18), (8, 23), (11, 13)]
    assert str(err.value).splitlines() == [str(p) for p in err.value.problems]
    result = guard_check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"guard: error: {line}" for line in str(err.value).splitlines()]


def test_a_catalogue_error_names_the_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "rules: []\n")
    (tmp_path / "agents.yaml").write_text(
        "categories: {ai_training: x}\nagents:\n  - {name: A, operator: B, category: ai_trainin}\n"
        "  - {name: C, operator: D, category: ai_training, colour: red}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    catalogue = tmp_path / "agents.yaml"
    assert str(err.value).splitlines() == [
        f"{catalogue}:3:38: agent 'A': category: unknown category 'ai_trainin' (known: ai_training)",
        f"{catalogue}:4:51: agent 'C': unknown key 'colour' (expected one of: name, operator, category, ua, robots,"
        " example, verify, leading)",
    ]
    (tmp_path / "agents.yaml").write_text(
        "categories: {ai_training: x}\nagents:\n  - {name: A, operator: B, category: ai_training}\n"
        "  - {name: a, operator: D, category: ai_training}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert str(err.value) == f"{catalogue}:4:12: agent 'a': name: duplicate agent name 'a'"


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert (ROOT / "rules" / "schema.json").read_text(encoding="utf-8") == json_schema_text()


def test_the_checked_in_reference_is_the_generated_one() -> None:
    assert (ROOT / "docs" / "rules-reference.md").read_text(encoding="utf-8") == markdown_reference()


def test_guard_schema_prints_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "guard.ops.cli", "schema"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == json_schema_text()


def test_the_model_and_the_engine_agree_on_the_words() -> None:
    base = {"per": "1m", "requests": 1}
    for key in (*KEY_KINDS, "v4/16", "v6/48"):
        assert model.Limit.model_validate({"key": key, **base}).key == key
    for key in ("planet", "v4/33", "v5/8", "IP"):
        with pytest.raises(ValueError):
            model.Limit.model_validate({"key": key, **base})
    assert get_args(model.Rule.model_fields["action"].annotation) == model.ACTIONS
