"""``guard check``: the JSON Schema of rules files, and warnings about rules that never act.

The schema (rules/schema.json) is what editors validate against; guard checks it too, and
then the meaning (rules/guard.rules). Warnings come from walking every combination of
request facts (category, agent, path group, User-Agent present or not) through the
rules: a rule that no combination reaches is unreachable, and the earlier rules that
decide all its requests are said to shadow it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guard.errors import ConfigError
from guard.policy.paths import OTHER
from guard.policy.rules import Policy, Rule
from guard.yamlfile import Located

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "rules" / "schema.json"


def schema() -> dict[str, Any]:
    """The rules file JSON Schema (rules/schema.json, packaged as guard/shipped/schema.json)."""
    if SCHEMA_PATH.exists():
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    from importlib.resources import files

    return json.loads(files("guard.shipped").joinpath("schema.json").read_text(encoding="utf-8"))


def schema_errors(doc: Located) -> list[ConfigError]:
    """Schema violations of a parsed rules file, each with the line of the offending value."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        container, key = doc.data, None
        for step in list(error.absolute_path)[:-1]:
            container = container[step]
        if error.absolute_path:
            key = error.absolute_path[-1]
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        errors.append(ConfigError(doc.file, doc.line(container, key), f"schema: {where}: {error.message}"))
    return errors


def rule_warnings(policy: Policy) -> list[str]:
    """Rules that no request can reach, with the rules that take their requests first."""
    agents: list[str | None] = [None]
    for rule in policy.rules:
        agents += [a for a in rule.match.agents if a not in agents]
    facts = [
        (category, agent, group, ua_missing)
        for category in policy.categories
        for agent in agents
        for group in [*policy.paths.groups, OTHER]
        for ua_missing in (False, True)
        if not (ua_missing and (agent is not None or category != "unknown"))
    ]
    reached: set[str] = set()
    taken_by: dict[str, set[str]] = {}
    for fact in facts:
        decider: Rule | None = None
        for rule in policy.rules:
            if not rule.match.matches(*fact):
                continue
            if decider is not None:
                taken_by.setdefault(rule.id, set()).add(decider.id)
                continue
            reached.add(rule.id)
            if rule.limit is None and not rule.shadow:
                decider = rule
    warnings = []
    for rule in policy.rules:
        if rule.id in reached:
            continue
        by = sorted(taken_by.get(rule.id, ()))
        if by:
            warnings.append(
                f"{policy.source}:{rule.line}: rule {rule.id!r} is unreachable: "
                f"every request it matches is decided first by {', '.join(repr(b) for b in by)}"
            )
        else:
            warnings.append(f"{policy.source}:{rule.line}: rule {rule.id!r} matches no request")
    return warnings
