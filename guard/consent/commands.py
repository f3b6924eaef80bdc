"""The ``guard consent`` and ``guard license`` subcommands (parsers and what they run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from guard.consent import admin
from guard.consent.model import USAGES, ConsentError
from guard.consent.settings import DEFAULT_LEDGER
from guard.consent.sources import load_file
from guard.errors import ConfigError
from guard.ops.arguments import CommandError, number, redis_url
from guard.policy.extends import shipped_dir

SHIPPED_CONSENT = shipped_dir() / "consent.yaml"  # rules/ in a checkout, guard/shipped installed


def default_consent_file() -> str:
    """``$GUARD_CONSENT`` when it names a file, else the shipped rules/consent.yaml."""
    env = os.environ.get("GUARD_CONSENT")
    return env if env and env != "redis" else str(SHIPPED_CONSENT)


def demo_consent(choice: str | None) -> str:
    """The demo's consent source, checked before it starts: ``redis`` or a consent file's path."""
    if choice == "redis":
        return choice
    path = Path(choice or SHIPPED_CONSENT).resolve()
    try:
        load_file(path)  # a bad file fails here, once, with its reason
    except (ConsentError, OSError) as exc:
        raise ConfigError(str(path), None, str(exc).removeprefix(f"{path}: ")) from None
    return str(path)


def consent_choice(text: str) -> str:
    """A ``--consent`` value: ``redis``, or a consent file that parses (checked while parsing)."""
    try:
        return demo_consent(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", help="consent file (default: $GUARD_CONSENT or the shipped rules/consent.yaml)")
    parser.add_argument("--redis-url", type=redis_url, help="the consents in this Redis instead of a file")
    parser.add_argument("--namespace", default="guard", help="Redis key prefix (the rules' redis.namespace)")


def add_consent(sub: Any) -> None:
    """``guard consent show|set|revoke|report``."""
    consent = sub.add_parser("consent", help="artists' opt-ins to AI use: show, set, revoke, report")
    actions = consent.add_subparsers(dest="consent_command", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="print the consents (all, or one artist's)")
    _where(show)
    show.add_argument("--artist")
    show.add_argument("--json", action="store_true")

    change = actions.add_parser("set", help="add or replace an artist's consent for a usage")
    _where(change)
    change.add_argument("artist")
    change.add_argument("--usage", required=True, choices=USAGES)
    change.add_argument("--operator", action="append", default=[], help="only this operator (repeatable)")
    change.add_argument("--track", action="append", default=[], help="only this track id (repeatable)")
    change.add_argument("--from", dest="start", help="start date (YYYY-MM-DD or ISO 8601)")
    change.add_argument("--until", help="end date (YYYY-MM-DD or ISO 8601)")
    change.add_argument("--price", help="pay per crawl price, e.g. 'USD 0.02', or 'none' for licences only")

    revoke = actions.add_parser("revoke", help="withdraw an artist's consents (one usage, or all)")
    _where(revoke)
    revoke.add_argument("artist")
    revoke.add_argument("--usage", choices=USAGES)

    report = actions.add_parser("report", help="total the accounting records")
    report.add_argument("--artist")
    report.add_argument("--since", help="a date, an ISO 8601 time or a duration ago (24h, 7d)")
    report.add_argument("--ledger", default=os.environ.get("GUARD_CONSENT_LEDGER") or DEFAULT_LEDGER)
    report.add_argument("--redis-url", type=redis_url, help="read the Redis accounting stream instead of the file")
    report.add_argument("--namespace", default="guard")
    report.add_argument("--json", action="store_true")
    consent.set_defaults(run=run)


def add_license(sub: Any) -> None:
    """``guard license issue``."""
    licence = sub.add_parser("license", help="licence tokens for AI operators")
    issue = licence.add_subparsers(dest="license_command", required=True, metavar="ACTION").add_parser(
        "issue", help="print a signed licence token (Authorization: License <token>)"
    )
    issue.add_argument("--operator", required=True, help="the operator, as the catalogue names it (e.g. OpenAI)")
    issue.add_argument("--artist", action="append", required=True, help="an artist it covers (repeatable)")
    issue.add_argument("--usage", action="append", required=True, choices=USAGES, help="a usage (repeatable)")
    issue.add_argument("--days", type=number(float, 0, 3660, above=True), default=30.0)
    issue.add_argument("--key", help="signing key (default: $GUARD_LICENCE_KEY or ~/.config/guard/licence-key.json)")
    licence.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``guard consent ...`` or ``guard license ...``; a bad value is one error line."""
    try:
        if args.command == "license":
            print(admin.issue_licence(args.operator, args.artist, args.usage, args.days, args.key))
            return 0
        return asyncio.run(_consent(args))
    except ConsentError as exc:
        raise CommandError(str(exc)) from None


async def _consent(args: argparse.Namespace) -> int:
    if args.consent_command == "report":
        since = admin.parse_since(args.since)
        ledger, client = admin.open_ledger(args.ledger, args.redis_url, args.namespace)
        try:
            lines = await admin.report(ledger, args.artist, since)
        finally:
            if client is not None:
                await client.aclose()
        if args.json:
            print(json.dumps([t.to_dict() for t in lines], indent=2))
        else:
            sys.stdout.write(admin.format_report(lines, ledger.name))
        return 0
    file = None if args.redis_url else (args.file or default_consent_file())
    registry = admin.Registry(file, args.redis_url, args.namespace)
    try:
        if args.consent_command == "show":
            records = await registry.records()
            shown = {a: r.to_list() for a, r in sorted(records.items()) if args.artist in (None, a)}
            if args.json:
                print(json.dumps(shown, indent=2))
            else:
                print(f"consents in {registry.name}:")
                for artist, consents in shown.items():
                    for consent in consents:
                        print(f"  {artist}: " + ", ".join(f"{k}={v}" for k, v in consent.items()))
                if not shown:
                    print("  (none: no AI use)")
            return 0
        if args.consent_command == "set":
            fields = {"operators": args.operator, "tracks": args.track, "from": args.start, "until": args.until}
            record = await admin.set_consent(registry, args.artist, args.usage, price=args.price, **fields)
        else:
            record = await admin.revoke(registry, args.artist, args.usage)
        now = json.dumps(record.to_list()) if record.consents else "no consent"
        print(f"{record.artist} in {registry.name}: {now}")
        return 0
    finally:
        await registry.close()
