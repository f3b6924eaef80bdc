"""The ``guard`` command: run the demo, check rules files, print the directives."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from guard.errors import ConfigError


def _env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").replace(",", " ").split() if p]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guard", description="Keep AI-training crawlers and bulk scrapers off a music platform."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the demo music platform behind the guard")
    demo.add_argument("--host", default=os.environ.get("GUARD_HOST", "127.0.0.1"))
    demo.add_argument("--port", type=int, default=int(os.environ.get("GUARD_PORT", "8000")))
    demo.add_argument(
        "--rules",
        default=os.environ.get("GUARD_RULES"),
        help="rules file (env GUARD_RULES; default: the shipped rules/default.yaml)",
    )
    demo.add_argument(
        "--redis-url",
        default=os.environ.get("GUARD_REDIS_URL"),
        help="share counters through Redis (env GUARD_REDIS_URL; default: the embedded memory store)",
    )
    demo.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="CIDR",
        help="believe X-Forwarded-For from this proxy (repeatable; env GUARD_TRUSTED_PROXIES, comma-separated)",
    )
    demo.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    demo.add_argument("--log-level", default="info")

    check = sub.add_parser("check", help="validate a rules file (exit status 1 on error)")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true", help="warnings fail too")

    explain = sub.add_parser("explain", help="why a request would be allowed, blocked or throttled")
    explain.add_argument("--ua", default=None, help="User-Agent (omit for none)")
    explain.add_argument("--ip", required=True, help="the socket peer's address")
    explain.add_argument("--path", required=True, help="path (and query) of the request")
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="another request header, e.g. 'X-Forwarded-For: 203.0.113.9' (repeatable)",
    )
    explain.add_argument("--rules", default=os.environ.get("GUARD_RULES"))
    explain.add_argument(
        "--redis-url",
        default=os.environ.get("GUARD_REDIS_URL"),
        help="read counters from this Redis (default: the rules' redis.url, else none)",
    )
    explain.add_argument("--trusted-proxy", action="append", default=None, metavar="CIDR")
    explain.add_argument("--json", action="store_true", help="print the report as JSON")

    top = sub.add_parser("top", help="live table of the clients, subnets and agents stopped most (from Redis)")
    top.add_argument("--redis-url", default=os.environ.get("GUARD_REDIS_URL"))
    top.add_argument("--rules", default=os.environ.get("GUARD_RULES"), help="for redis.url and namespace")
    top.add_argument("--minutes", type=int, default=5)
    top.add_argument("--limit", type=int, default=10)
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print the table once and exit")

    update = sub.add_parser("update-ranges", help="refresh crawler IP ranges from their operators' published files")
    update.add_argument("--rules", default=os.environ.get("GUARD_RULES"))
    update.add_argument("--dir", help="where to write them (default: the ranges folder beside the rules file)")
    update.add_argument("--timeout", type=float, default=10.0)

    robots = sub.add_parser("robots", help="print the robots.txt (or ai.txt) generated from a rules file")
    robots.add_argument("--rules", default=os.environ.get("GUARD_RULES"))
    robots.add_argument("--ai-txt", action="store_true", help="print ai.txt instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args.file, args.strict)
        if args.command == "robots":
            return cmd_robots(args.rules, args.ai_txt)
        if args.command == "update-ranges":
            return cmd_update_ranges(args.rules, args.dir, args.timeout)
        if args.command == "explain":
            return cmd_explain(args)
        if args.command == "top":
            return cmd_top(args)
        return cmd_demo(args)
    except ConfigError as exc:
        print(f"guard: {exc}", file=sys.stderr)
        return 1


def cmd_check(path: str, strict: bool = False) -> int:
    from guard.policy.lint import rule_warnings, schema_errors
    from guard.policy.rules import load_rules
    from guard.yamlfile import load_yaml

    errors = schema_errors(load_yaml(path))
    if errors:
        for error in errors:
            print(f"guard: {error}", file=sys.stderr)
        return 1
    policy = load_rules(path)
    warnings = rule_warnings(policy)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{path}: ok ({len(policy.rules)} rules, {len(policy.paths.groups)} path groups, "
        f"{len(policy.catalogue.agents)} catalogue agents, {len(warnings)} warnings)"
    )
    return 1 if strict and warnings else 0


def cmd_robots(rules: str | None, ai: bool) -> int:
    from guard.middleware import default_rules_path
    from guard.policy.rules import load_rules
    from guard.signals.directives import ai_txt, robots_txt

    policy = load_rules(rules or default_rules_path())
    sys.stdout.write(ai_txt(policy) if ai else robots_txt(policy))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from guard.middleware import GuardMiddleware
    from guard.ops.explain import explain, format_text

    async def app(scope, receive, send) -> None:  # explain never calls the application
        raise RuntimeError("not used")

    proxies = args.trusted_proxy if args.trusted_proxy is not None else _env_list("GUARD_TRUSTED_PROXIES")
    headers = []
    for header in args.header:
        name, _, value = header.partition(":")
        headers.append((name.strip().lower().encode(), value.strip().encode("latin-1", "replace")))

    async def run() -> dict:
        middleware = GuardMiddleware(
            app, args.rules, trusted_proxies=proxies, redis_url=args.redis_url, reload_interval=0
        )
        try:
            return await explain(middleware.guard, user_agent=args.ua, ip=args.ip, path=args.path, headers=headers)
        finally:
            await middleware.guard.store.close()

    report = asyncio.run(run())
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_text(report))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    import asyncio

    from guard.middleware import default_rules_path
    from guard.ops.top import read_top, render
    from guard.policy.rules import RedisSettings, load_rules
    from guard.stores.redis import redis_client

    settings = load_rules(args.rules or default_rules_path()).redis or RedisSettings()
    url = args.redis_url or settings.url
    if not url:
        print("guard: guard top reads Redis: give --redis-url or GUARD_REDIS_URL", file=sys.stderr)
        return 1

    async def run() -> None:
        client = redis_client(url)
        try:
            while True:
                text = render(await read_top(client, settings.namespace, args.minutes, args.limit), args.minutes)
                if args.once:
                    sys.stdout.write(text)
                    return
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n(Ctrl-C to quit)\n")
                sys.stdout.flush()
                await asyncio.sleep(args.interval)
        finally:
            await client.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def cmd_update_ranges(rules: str | None, directory: str | None, timeout: float) -> int:
    from pathlib import Path

    from guard.identity.ranges import update_ranges
    from guard.middleware import default_rules_path
    from guard.policy.rules import load_rules

    policy = load_rules(rules or default_rules_path())
    target = directory or str(Path(policy.source).parent / "ranges")
    report = update_ranges(policy.catalogue.agents, target, timeout=timeout)
    return 0 if all(line.startswith("updated") for line in report.values()) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from guard.middleware import default_rules_path
    from guard.policy.rules import load_rules

    # Validate before any worker starts so a bad file fails once, clearly.
    rules = args.rules or str(default_rules_path())
    load_rules(rules)
    os.environ["GUARD_RULES"] = rules
    proxies = args.trusted_proxy if args.trusted_proxy is not None else _env_list("GUARD_TRUSTED_PROXIES")
    os.environ["GUARD_TRUSTED_PROXIES"] = ",".join(proxies)
    if args.redis_url:
        os.environ["GUARD_REDIS_URL"] = args.redis_url
    store = f"redis at {args.redis_url}" if args.redis_url else "embedded memory store"
    print(f"guard demo on http://{args.host}:{args.port}/  rules={rules}  store={store}", file=sys.stderr)
    uvicorn.run(
        "guard.demo.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
