"""``guard explain``: why a request would be allowed, blocked or throttled.

It builds the request's facts as the middleware would, walks every rule in order saying
whether and why it matched, reads the counters involved from the store (Redis when
configured) without changing them, and gives the decision a request would get now.
"""

from __future__ import annotations

from typing import Any

from guard.consent.admin import consent_lines
from guard.identity.address import format_ip, parse_ip
from guard.identity.identify import describe_browser
from guard.policy.engine import Guard, block_reason, limit_text
from guard.policy.model import BUILTIN_CATEGORIES
from guard.policy.rules import Match, Rule
from guard.sessions.gate import Reading
from guard.sessions.service import Sessions


def _why_not(
    match: Match,
    category: str,
    agent: str | None,
    group: str,
    ua_missing: bool,
    hosting: bool = False,
    session: str = "none",
) -> str | None:
    """None if ``match`` holds, else the first condition that fails, in words."""
    if match.categories and category not in match.categories:
        return f"category {category} is not {', '.join(sorted(match.categories))}"
    if match.agents and (agent is None or agent.lower() not in match.agents):
        return f"agent {agent or '-'} is not {', '.join(sorted(match.agents))}"
    if match.paths and group not in match.paths:
        return f"path group {group} is not {', '.join(sorted(match.paths))}"
    if match.user_agent is not None and (match.user_agent == "missing") != ua_missing:
        return f"user agent is {'missing' if ua_missing else 'present'}, rule wants {match.user_agent}"
    if match.hosting and not hosting:
        return "the address is not in a hosting provider's ranges, rule wants network hosting"
    if match.sessions and session not in match.sessions:
        return f"session is {session}, rule wants {', '.join(sorted(match.sessions))}"
    return None


async def explain(
    guard: Guard,
    *,
    user_agent: str | None,
    ip: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    sessions: Sessions | None = None,
) -> dict[str, Any]:
    """The full reasoning for one request, as a JSON-able dict. Nothing is counted.

    ``sessions`` (the middleware's) reads the session the request carries: its cookie among
    ``headers``, or a signed stream URL in ``path``.
    """
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    all_headers = list(headers or [])
    if user_agent is not None:
        all_headers.append((b"user-agent", user_agent.encode("latin-1", "replace")))
    client = guard.resolver.resolve({"client": (ip, 0), "headers": all_headers})
    claim = guard.identifier.from_user_agent(user_agent) if user_agent and user_agent.strip() else None
    if claim and claim.agent and guard.identifier.rdns and claim.category in guard.identifier.verify_categories:
        await guard.identifier.rdns.check(claim.agent, client)  # a tool may wait for DNS; requests never do
    reading = None
    if sessions is not None:
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": all_headers}
        reading = sessions.read(scope, client, user_agent, guard.clock())
    facts = guard.facts(client, user_agent, path, None, query, reading.session if reading else None)
    identity = facts.identity
    policy = guard.policy
    plan = policy.plan(*facts.plan_key)
    exempt = guard.is_exempt(facts.where.group)

    rules: list[dict[str, Any]] = []
    decided_by: Rule | None = None
    limits = list(guard.limits_for(plan.limits, facts.client))
    checks = guard.checks(facts, tuple(limits))
    states = await guard.store.peek(guard.clock(), checks) if limits else []
    if limits and hasattr(guard.store, "peek_scopes"):
        scopes = await guard.store.peek_scopes(guard.clock(), checks)
        for state, scope in zip(states, scopes, strict=True):
            _add_scope(state, scope)
    state_of = {rule.id: state for rule, state in zip(limits, states, strict=True)}
    for rule in policy.rules:
        entry: dict[str, Any] = {"id": rule.id, "line": rule.line, "shadow": rule.shadow}
        if decided_by is not None:
            entry["result"] = f"not reached: rule {decided_by.id} decided"
        else:
            reason = _why_not(
                rule.match,
                identity.category,
                identity.agent.name if identity.agent else None,
                facts.where.group,
                identity.ua_missing,
                facts.client.provider is not None,
                facts.session_state,
            )
            if reason is not None:
                entry["result"] = f"no match: {reason}"
            elif rule.limit is not None and rule.id not in state_of:
                entry["result"] = f"not counted: this client has no {rule.key} key"
            elif rule.limit is not None:
                state = state_of.get(rule.id, {})
                entry["result"] = f"counts: {limit_text(rule)}"
                entry["counter"] = state
            elif rule.shadow:
                entry["result"] = f"matched in shadow mode: would {rule.action} (not enforced)"
            else:
                entry["result"] = f"matched: {rule.action}"
                decided_by = rule
        rules.append(entry)

    robots = None
    if identity.agent is not None and identity.agent.robots_tokens and guard.robots is not None:
        allowed, line = guard.robots.check(identity.agent.robots_tokens, path + ("?" + query if query else ""))
        robots = {"allowed": allowed, "rule": line.line if line else None}

    required = guard.sessions is not None and facts.where.group in guard.sessions.require
    if exempt:
        decision = {"action": "allow", "rule": None, "reason": f"path group {facts.where.group} is exempt"}
    elif plan.terminal is not None and plan.terminal.action in ("block", "challenge"):
        decision = {"action": plan.terminal.action, "rule": plan.terminal.id, "reason": block_reason(plan.terminal)}
    elif required and facts.session is None:
        problem = (reading.problem if reading else None) or "a session is required"
        decision = {"action": "challenge", "rule": "session-required", "reason": problem}
    elif robots is not None and not robots["allowed"]:
        decision = {"action": "block", "rule": "robots-txt", "reason": f"robots.txt: {robots['rule']}"}
    else:
        denied = next((r for r in limits if not r.shadow and state_of[r.id].get("would_deny")), None)
        if denied is not None:
            banned = "banned_for" in state_of[denied.id]
            decision = {
                "action": "block" if banned else denied.action,
                "rule": denied.id,
                "reason": ("banned: " if banned else "limit exceeded: ") + limit_text(denied),
            }
        else:
            terminal = plan.terminal
            decision = {
                "action": "allow",
                "rule": terminal.id if terminal else None,
                "reason": "allowed by rule" if terminal else "no rule decided: allowed",
            }

    parsed = parse_ip(ip)
    return {
        "request": {
            "ip": format_ip(*parsed) if parsed else ip,
            "path": facts.path,
            "query": query or None,
            "user_agent": user_agent,
        },
        "client": {
            "from": client.source or "peer",
            "forwarded_header": guard.resolver.forwarded_header if guard.resolver.trusted else None,
            "ip": client.ip,
            "key": client.key,
            "subnet": client.subnet,
            "networks": {f"/{prefix}": network for prefix, network in client.networks},
            "hash_tag": client.tag,
            "hosting": client.provider,
        },
        "session": _session_report(guard, facts, reading),
        "identity": {
            "category": identity.category,
            "agent": identity.agent.name if identity.agent else None,
            "operator": identity.agent.operator if identity.agent else None,
            "token": identity.token,
            "claimed": identity.claimed,
            "verified": identity.verified,
            "evidence": identity.evidence,
            # What the category means, for those no catalogue entry explains (graded trust).
            "why": BUILTIN_CATEGORIES.get(identity.category) if identity.agent is None else None,
            "agent_key": identity.agent_key,
            "browser": describe_browser(user_agent) if user_agent else None,
        },
        "path": {
            "group": facts.where.group,
            "track": facts.where.track,
            "track_raw": facts.where.raw,
            "exempt": exempt,
        },
        "robots": robots,
        "rules": rules,
        "decision": decision,
        "shadow_policy": policy.shadow,
    }


def _add_scope(state: dict[str, Any], scope: dict[str, Any] | None) -> None:
    """Fold a check's ban scope into its counter state: a ban reaching it from its address or
    subnet, or inherited by a User-Agent new to a held address, denies like its own."""
    if scope is None:
        return
    state["ban_scope"] = scope
    reaching = [scope.get(k, 0) for k in ("address_banned_for", "subnet_banned_for", "inherits_ban_for")]
    if max(reaching) > 0:
        state["banned_for"] = max(state.get("banned_for", 0), *reaching)
        state["would_deny"] = True


def format_text(report: dict[str, Any]) -> str:
    """A terminal rendering of :func:`explain`'s report."""
    d, i, p = report["decision"], report["identity"], report["path"]
    verified = {True: "verified", False: "FAILED verification", None: "not verified"}[i["verified"]]
    lines = [
        f"decision: {d['action'].upper()}" + (f" by rule {d['rule']}" if d["rule"] else "") + f" ({d['reason']})",
        f"client:   {report['client']['ip']} (counted as {report['client']['key']}, "
        f"subnet {report['client']['subnet']}; from {report['client']['from']})",
        f"networks: {', '.join(report['client']['networks'].values()) or '-'} (hash tag {report['client']['hash_tag']})"
        + (f"; hosting provider {report['client']['hosting']}" if report["client"]["hosting"] else ""),
        f"identity: category {i['category']}"
        + (f", agent {i['agent']} ({i['operator']}), token {i['token']!r}, {verified}" if i["agent"] else "")
        + (f" by {i['evidence']}" if i["evidence"] else "")
        + (
            f", self-declared name {i['token']!r} (limits keyed agent count it)"
            if i["token"] and not i["agent"]
            else ""
        ),
        *([f"          {i['why']}"] if i.get("why") else []),
        f"browser:  {i['browser'] or '-'}",
        *_session_lines(report.get("session")),
        f"path:     {report['request']['path']} -> group {p['group']}"
        + (f", track {p['track']}" if p["track"] else "")
        + (f" (spelled {p['track_raw']!r})" if p["track"] and p["track_raw"] != p["track"] else "")
        + (" (exempt)" if p["exempt"] else ""),
    ]
    if report["robots"] is not None:
        r = report["robots"]
        lines.append(
            f"robots:   {'allowed' if r['allowed'] else 'DISALLOWED'}" + (f" by {r['rule']}" if r["rule"] else "")
        )
    lines += consent_lines(report.get("consent"))
    if report["shadow_policy"]:
        lines.append("policy:   SHADOW MODE (nothing is enforced)")
    lines.append("rules:")
    for rule in report["rules"]:
        lines.append(f"  {rule['id']:<24} line {rule['line']}: {rule['result']}")
        counter = rule.get("counter")
        if counter:
            shown = {k: v for k, v in counter.items() if k not in ("key", "kind")}
            lines.append(f"  {'':<24}   counter {counter['key']}: {shown}")
    return "\n".join(lines) + "\n"


def _session_lines(session: dict[str, Any] | None) -> list[str]:
    if session is None:
        return []
    if session["id"] is None:
        why = f" ({session['problem']})" if session["problem"] else ""
        need = "; this path requires one" if session["required_here"] else ""
        return [f"session:  none{why}{need}"]
    proven = f", proven for {session['proven_for_s']} s" if session["proven_for_s"] else ""
    return [
        f"session:  {session['state']} (id {session['id']}, {session['platform']}, "
        f"expires in {session['expires_in_s']} s{proven})"
    ]


def _session_report(guard: Guard, facts: Any, reading: Reading | None) -> dict[str, Any] | None:
    """The session the request carries, as rules see it (None: sessions are off)."""
    if guard.sessions is None:
        return None
    session = facts.session
    now = guard.clock()
    proven = session is not None and session.proven_until > now
    return {
        "state": facts.session_state,
        "id": session.id if session is not None else None,
        "platform": session.platform if session is not None else None,
        "expires_in_s": round(session.issued_at + guard.sessions.ttl - now) if session is not None else None,
        "proven_for_s": round(session.proven_until - now) if proven and session is not None else None,
        "problem": reading.problem if reading is not None else None,
        "required_here": facts.where.group in guard.sessions.require,
    }
