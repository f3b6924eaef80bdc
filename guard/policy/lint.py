"""``guard check``: warnings about rules that never act, once the file has validated.

Errors come from the model (guard/policy/model.py); these are warnings about a valid
file's meaning. They come from walking every combination of
request facts (category, agent, path group, User-Agent present or not) through the
rules: a rule that no combination reaches is unreachable, and the earlier rules that
decide all its requests are said to shadow it.
"""

from __future__ import annotations

from guard.policy.model import SESSION_STATES
from guard.policy.paths import OTHER
from guard.policy.rules import Policy, Rule


def rule_warnings(policy: Policy) -> list[str]:
    """Rules that no request can reach, with the rules that take their requests first."""
    agents: list[str | None] = [None]
    for rule in policy.rules:
        agents += [a for a in rule.match.agents if a not in agents]
    facts = [
        (category, agent, group, ua_missing, session, hosting)
        for category in policy.categories
        for agent in agents
        for group in [*policy.paths.groups, OTHER]
        for ua_missing in (False, True)
        for session in SESSION_STATES
        for hosting in (False, True)
        if not (ua_missing and (agent is not None or category != "unknown"))
    ]
    reached: set[str] = set()
    taken_by: dict[str, set[str]] = {}
    for fact in facts:
        decider: Rule | None = None
        for rule in policy.rules:
            if not rule.match.matches(*fact) or (rule.action == "challenge" and fact[4] == "proven"):
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
