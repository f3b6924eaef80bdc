"""The ``guard`` command: run the demo, check rules files, explain decisions, print the directives.

Each subcommand is one ``add_<name>`` function that builds its parser and names the
function that runs it (``set_defaults(run=...)``); :data:`COMMANDS` lists them in the
order ``guard --help`` shows. A command reports a failure by raising
:class:`~guard.ops.arguments.CommandError` (or :class:`~guard.errors.ConfigError`);
:func:`main` turns any failure into one line ``guard: error: ...`` and an exit status:
2 for a wrong command line, 1 for a command that ran and failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from guard.consent.commands import add_consent, add_license, consent_choice
from guard.errors import ConfigError
from guard.ops.arguments import (
    FAILED,
    CommandError,
    Options,
    Parser,
    cidr,
    fail,
    header,
    http_url,
    ip_address,
    number,
    parse,
    port,
    redis_url,
    url_path,
)

SubParsers = Any  # argparse's _SubParsersAction (private type)
CONSENT_HELP = "artists' consent file, or 'redis'"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _rules_option(options: Options, help: str = "rules file") -> None:
    options.add("--rules", env="GUARD_RULES", shown="the shipped rules", help=help, metavar="FILE")


def _redis_option(options: Options, help: str) -> None:
    options.add("--redis-url", env="GUARD_REDIS_URL", type=redis_url, help=help, metavar="URL")


def _proxy_option(options: Options) -> None:
    options.add(
        "--trusted-proxy",
        env="GUARD_TRUSTED_PROXIES",
        type=cidr,
        action="append",
        metavar="CIDR",
        help="believe the forwarded header (rules: clients.forwarded) from this proxy (repeatable; the variable is "
        "comma-separated)",
    )


def _rules_path(args: argparse.Namespace) -> str:
    from guard.middleware import default_rules_path

    rules = getattr(args, "rules", None)
    return str(rules) if rules else str(default_rules_path())


# -- guard demo --------------------------------------------------------------------------------


def _server_options(options: Options, port_default: int) -> None:
    """The options of a command that runs a server under uvicorn."""
    options.add("--host", env="GUARD_HOST", default="127.0.0.1", help="address to listen on")
    options.add("--port", env="GUARD_PORT", default=port_default, type=port, help="port to listen on")
    _rules_option(options)
    _redis_option(options, "share counters through Redis (none: the embedded memory store)")
    _proxy_option(options)
    options.add("--workers", default=1, type=number(int, 1, 256), help="uvicorn worker processes")
    options.add(
        "--split-counters",
        action="store_true",
        help="allow --workers > 1 on the memory store (each worker then counts alone: limits multiply)",
    )
    options.add("--log-level", default="info", choices=LOG_LEVELS, help="uvicorn log level")


def _run_server(args: argparse.Namespace, factory: str, what: str, extra: str = "") -> int:
    """Check the rules and the store once, pass the settings to ``factory`` through the environment, run uvicorn."""
    import uvicorn

    from guard.policy.rules import RedisSettings, load_rules

    # Validate before any worker starts so a bad file fails once, clearly.
    rules = _rules_path(args)
    shared = args.redis_url or (load_rules(rules).redis or RedisSettings()).url
    if args.workers > 1 and not shared and not args.split_counters:
        raise CommandError(
            f"--workers {args.workers} on the embedded memory store would split the counters "
            f"(each worker allows the full limit, {args.workers} times in all): "
            "give --redis-url to share them, or --split-counters to run anyway"
        )
    os.environ["GUARD_RULES"] = rules
    os.environ["GUARD_TRUSTED_PROXIES"] = ",".join(args.trusted_proxy or [])
    if args.redis_url:
        os.environ["GUARD_REDIS_URL"] = args.redis_url
    store = f"redis at {args.redis_url}" if args.redis_url else "embedded memory store"
    print(f"{what} on http://{args.host}:{args.port}/  rules={rules}  store={store}{extra}", file=sys.stderr)
    if args.workers > 1 and not shared:
        print(
            f"guard: warning: {args.workers} workers on the memory store: each counts alone, limits are "
            f"{args.workers} times higher than the rules say; use --redis-url to share counters",
            file=sys.stderr,
        )
    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=False,
    )
    return 0


# -- guard demo --------------------------------------------------------------------------------


def add_demo(sub: SubParsers) -> None:
    parser = sub.add_parser("demo", help="run the demo music platform behind the guard")
    options = Options(parser)
    _server_options(options, 8000)
    options.add("--consent", env="GUARD_CONSENT", type=consent_choice, help=CONSENT_HELP, shown="rules/consent.yaml")
    parser.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ["GUARD_CONSENT"] = consent = args.consent or consent_choice("")
    if not os.environ.get("GUARD_SESSION_KEY"):  # one random session key for all of the demo's workers
        os.environ["GUARD_SESSION_KEY"] = secrets.token_urlsafe(32)
    if not os.environ.get("GUARD_BUDGET_KEY"):  # and one budget key, so that its workers count alike
        os.environ["GUARD_BUDGET_KEY"] = secrets.token_urlsafe(32)
    return _run_server(args, "guard.demo.app:app_from_env", "guard demo", f"  consent={consent}")


# -- guard serve --------------------------------------------------------------------------------


def add_serve(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "serve", help="answer the auth subrequests of nginx, Traefik, Caddy or Envoy, and serve the directive files"
    )
    options = Options(parser)
    options.add(
        "--forward-auth",
        action="store_true",
        required=True,
        help="answer forward-auth subrequests on /_guard/auth and /_guard/nginx (docs/deployment.md)",
    )
    _server_options(options, 9000)
    options.add(
        "--fail-open",
        action="store_true",
        help="when guard itself fails on a request, allow it (default: refuse it with 403; env GUARD_FAIL_OPEN=1)",
    )
    parser.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.trusted_proxy:
        args.trusted_proxy = ["127.0.0.1/32", "::1/128"]
        print("guard serve: trusting the proxy on loopback only (give --trusted-proxy for others)", file=sys.stderr)
    if args.fail_open:
        os.environ["GUARD_FAIL_OPEN"] = "1"
    return _run_server(args, "guard.forwardauth:app_from_env", "guard forward-auth")


# -- guard init ---------------------------------------------------------------------------------


def add_init(sub: SubParsers) -> None:
    parser = sub.add_parser("init", help="write a starter rules.yaml that extends the shipped rules")
    parser.add_argument("dir", nargs="?", default=".", help="folder to write rules.yaml in [default: .]")
    parser.add_argument("--force", action="store_true", help="replace an existing rules.yaml")
    parser.set_defaults(run=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from guard.policy.extends import shipped_dir
    from guard.policy.rules import load_rules

    target = Path(args.dir) / "rules.yaml"
    if target.exists() and not args.force:
        raise CommandError(f"{target} exists; give --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((shipped_dir() / "starter.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    policy = load_rules(target)
    print(f"wrote {target}: the shipped rules ({plural(len(policy.rules), 'rule')}) with room for yours")
    print(f"  check it:  guard check {target}")
    print(f'  mount it:  app = GuardMiddleware(app, rules="{target}")')
    print("  keys for the server's environment (sessions, and budgets shared through Redis; docs/mounting.md):")
    for line in key_lines():
        print(f"    {line}")
    return 0


# -- guard keygen --------------------------------------------------------------------------------

#: The secrets a serving guard reads from its environment, and what each is for.
KEYS = {
    "GUARD_SESSION_KEY": "signs session cookies and challenges (random per process when unset)",
    "GUARD_BUDGET_KEY": "hashes the tracks hour and day budgets count (the same on every instance)",
}


def add_keygen(sub: SubParsers) -> None:
    parser = sub.add_parser("keygen", help="print new random keys for $GUARD_SESSION_KEY and $GUARD_BUDGET_KEY")
    parser.set_defaults(run=cmd_keygen)


def key_lines() -> list[str]:
    """``export NAME=<new random key>`` for each of :data:`KEYS`."""
    return [f"export {name}={secrets.token_urlsafe(32)}" for name in KEYS]


def cmd_keygen(args: argparse.Namespace) -> int:
    for (name, what), line in zip(KEYS.items(), key_lines(), strict=True):
        print(f"# {name}: {what}")
        print(line)
    return 0


# -- guard check ---------------------------------------------------------------------------------


def add_check(sub: SubParsers) -> None:
    parser = sub.add_parser("check", help="validate rules files (exit status 1 on error)")
    parser.add_argument("files", nargs="+", metavar="file", help="the rules file(s)")
    parser.add_argument("--strict", action="store_true", help="warnings fail too (exit status 1)")
    parser.add_argument(
        "--redis-url",
        type=redis_url,
        metavar="URL",
        help="check this Redis too: reachable, and not evicting live budgets when full (maxmemory-policy)",
    )
    parser.set_defaults(run=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Each file's problems, as start-up would report them (see :func:`report`), or ok."""
    from guard.policy.lint import rule_warnings
    from guard.policy.rules import load_rules

    status = 0
    for path in args.files:
        try:
            policy = load_rules(path)
        except ConfigError as exc:
            report(exc)
            status = FAILED
            continue
        warnings = rule_warnings(policy)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        counts = ", ".join(
            (
                plural(len(policy.rules), "rule"),
                plural(len(policy.paths.groups), "path group"),
                plural(len(policy.catalogue.agents), "catalogue agent"),
                plural(len(warnings), "warning"),
            )
        )
        if args.strict and warnings:
            fail(f"{path}: {plural(len(warnings), 'warning')}, which --strict makes errors ({counts})")
            status = FAILED
            continue
        print(f"{path}: ok ({counts})")
        for note in policy.notes:
            print(f"{path}: {note}")
    if args.redis_url and not _redis_keeps_budgets(args.redis_url):
        status = FAILED
    return status


def plural(count: int, noun: str) -> str:
    """``1 rule``, ``2 rules``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _redis_keeps_budgets(url: str) -> bool:
    """Whether Redis at ``url`` answers and keeps live budgets when full (reported either way)."""
    import asyncio

    from guard.stores.redis import eviction_problem, redis_client

    async def problem() -> str | None:
        await _ping_redis(url)
        client = redis_client(url, socket_connect_timeout=3.0, socket_timeout=3.0)
        try:
            return await eviction_problem(client)
        finally:
            await client.aclose()

    try:
        found = asyncio.run(problem())
    except CommandError as exc:
        fail(str(exc))
        return False
    except Exception as exc:  # INFO refused (an ACL), or a cluster that does not answer it
        fail(f"cannot read Redis's eviction policy at {url}: {type(exc).__name__}: {exc}")
        return False
    if found is not None:
        fail(f"{url}: {found}")
        return False
    print(f"{url}: ok (reachable; keeps live budgets when full)")
    return True


# -- guard schema --------------------------------------------------------------------------------


def add_schema(sub: SubParsers) -> None:
    parser = sub.add_parser("schema", help="print the JSON Schema of rules files (rules/schema.json)")
    parser.add_argument("--markdown", action="store_true", help="print the reference of every key instead")
    parser.set_defaults(run=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from guard.policy.reference import json_schema_text, markdown_reference

    sys.stdout.write(markdown_reference() if args.markdown else json_schema_text())
    return 0


# -- guard explain -------------------------------------------------------------------------------


def add_explain(sub: SubParsers) -> None:
    parser = sub.add_parser("explain", help="why a request would be allowed, blocked or throttled")
    options = Options(parser)
    options.add("--ua", help="User-Agent (omitted: none)", show_default=False)
    options.add("--ip", required=True, type=ip_address, help="the socket peer's address", show_default=False)
    options.add("--path", required=True, type=url_path, help="path (and query) of the request", show_default=False)
    options.add(
        "--header",
        action="append",
        default=[],
        type=header,
        metavar="'Name: value'",
        help="another request header, e.g. 'X-Forwarded-For: 203.0.113.9' or 'Cookie: guard_session=...' (repeatable)",
        show_default=False,
    )
    _rules_option(options)
    _redis_option(options, "read counters from this Redis (none: the rules' redis.url, else no counters)")
    _proxy_option(options)
    options.add("--json", action="store_true", help="print the report as JSON")
    options.add("--consent", env="GUARD_CONSENT", type=consent_choice, help=CONSENT_HELP + " (none: no consent)")
    parser.set_defaults(run=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from guard.consent.admin import explain_request
    from guard.demo.app import artist_of, consent_settings
    from guard.middleware import GuardMiddleware
    from guard.ops.explain import explain, format_text
    from guard.policy.rules import RedisSettings, load_rules

    async def app(scope, receive, send) -> None:  # explain never calls the application
        raise RuntimeError("not used")

    policy = load_rules(_rules_path(args))
    url = args.redis_url or (policy.redis or RedisSettings()).url
    headers = [(name.lower().encode(), value.encode("latin-1", "replace")) for name, value in args.header]

    async def run() -> dict:
        if url:
            await _ping_redis(url)
        middleware = GuardMiddleware(
            app,
            policy,
            session_keys=quiet_session_keys(policy),
            trusted_proxies=args.trusted_proxy or (),
            redis_url=url,
            reload_interval=0,
            consent=consent_settings(args.consent),
            artist_resolver=artist_of,
        )
        request = {"user_agent": args.ua, "ip": args.ip, "path": args.path, "headers": headers}
        try:
            report = await explain(middleware.guard, sessions=middleware.sessions, **request)
            report["consent"] = await explain_request(middleware, **request)
            return report
        finally:
            await middleware.guard.store.close()

    report = asyncio.run(run())
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_text(report))
    return 0


def quiet_session_keys(policy: Any) -> Any:
    """The keys a server with these rules would read, else a random key, without the server's warning.

    A command that serves no traffic (``explain``) has no sessions to keep: no key is no news.
    """
    from guard.sessions.tokens import SessionKeys

    settings = policy.sessions
    if settings is None:
        return None
    if settings.key_file:
        return SessionKeys.from_file(settings.key_file)
    return SessionKeys.from_env(settings.key_env) or SessionKeys.generate()


async def _ping_redis(url: str, timeout: float = 3.0) -> None:
    """Raise CommandError unless Redis at ``url`` answers PING within ``timeout`` seconds."""
    from guard.stores.redis import redis_client

    client = redis_client(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except Exception as exc:
        raise CommandError(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        await client.aclose()


# -- guard top -----------------------------------------------------------------------------------


def add_top(sub: SubParsers) -> None:
    from guard.ops.top import BUCKET_TTL

    parser = sub.add_parser("top", help="live table of the clients, subnets and agents stopped most (from Redis)")
    options = Options(parser)
    _redis_option(options, "the Redis the guarded instances share (none: the rules' redis.url)")
    _rules_option(options, "rules file, for redis.url and the key namespace")
    options.add("--minutes", default=5, type=number(int, 1, BUCKET_TTL // 60), help="how far back to add up")
    options.add("--limit", default=10, type=number(int, 1), help="rows per table")
    options.add("--interval", default=2.0, type=number(float, 0, above=True), help="seconds between refreshes")
    options.add("--once", action="store_true", help="print the table once and exit")
    parser.set_defaults(run=cmd_top)


def cmd_top(args: argparse.Namespace) -> int:
    import asyncio

    from guard.ops.top import read_top, render
    from guard.policy.rules import RedisSettings, load_rules
    from guard.stores.redis import redis_client

    settings = load_rules(_rules_path(args)).redis or RedisSettings()
    url = args.redis_url or settings.url
    if not url:
        raise CommandError("guard top reads Redis: give --redis-url or GUARD_REDIS_URL")

    async def run() -> None:
        await _ping_redis(url)
        client = redis_client(url, socket_connect_timeout=3.0, socket_timeout=3.0)
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


# -- guard update-ranges -------------------------------------------------------------------------


def add_update_ranges(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "update-ranges", help="refresh crawler and hosting-provider IP ranges from their operators' published files"
    )
    options = Options(parser)
    _rules_option(options, "rules file (its catalogue names the URLs)")
    options.add("--dir", shown="the ranges folder beside the catalogue", help="where to write them")
    options.add("--timeout", default=10.0, type=number(float, 0, above=True), help="seconds per download")
    parser.set_defaults(run=cmd_update_ranges)


def cmd_update_ranges(args: argparse.Namespace) -> int:
    from pathlib import Path

    from guard.identity.ranges import update_hosting_ranges, update_ranges
    from guard.policy.rules import load_rules, ranges_dir

    policy = load_rules(_rules_path(args))
    target = args.dir or str(ranges_dir(policy))
    report = update_ranges(policy.catalogue.agents, target, timeout=args.timeout)
    hosting = update_hosting_ranges(Path(target) / "hosting", timeout=args.timeout)
    if hosting:
        print(hosting.summary(Path(target) / "hosting"))
    print(report.summary(target))
    return 0 if not report.failed and not hosting.failed else FAILED


# -- guard update-signers ------------------------------------------------------------------------


def add_update_signers(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "update-signers", help="refresh the Web Bot Auth signer file from each signer's key directory"
    )
    options = Options(parser)
    _rules_option(options, "rules file (it names the signer file: signatures: {directory: ...})")
    options.add("--timeout", default=10.0, type=number(float, 0, above=True), help="seconds per download")
    parser.set_defaults(run=cmd_update_signers)


def cmd_update_signers(args: argparse.Namespace) -> int:
    from guard.identity.keydirectory import update_signers
    from guard.policy.rules import load_rules

    policy = load_rules(_rules_path(args))
    if not policy.signatures_file:
        raise CommandError("the rules name no signer file (signatures: {directory: signers.json})")
    report = update_signers(policy.signatures_file, timeout=args.timeout)
    print(report.summary(policy.signatures_file))
    return 0 if not report.failed else FAILED


# -- guard update-agents -------------------------------------------------------------------------


def add_update_agents(sub: SubParsers) -> None:
    from guard.identity.crawlerlists import LIST_SOURCES
    from guard.identity.sync import ROBOTS_JSON_URL

    parser = sub.add_parser(
        "update-agents", help="sync the catalogue's AI agents (ai.robots.txt) and the public crawler lists"
    )
    options = Options(parser)
    _rules_option(options, "rules file (its catalogue names the synced file)")
    options.add("--url", default=ROBOTS_JSON_URL, type=http_url, help="robots.json to sync from")
    options.add("--timeout", default=10.0, type=number(float, 0, above=True), help="seconds for the download")
    options.add("--dry-run", action="store_true", help="print the changes, write nothing")
    options.add(
        "--crawler-user-agents-url",
        default=LIST_SOURCES[0][1],
        type=http_url,
        help="crawler-user-agents.json to sync the named crawlers, previewers and tools from",
    )
    options.add(
        "--well-known-bots-url", default=LIST_SOURCES[1][1], type=http_url, help="well-known-bots.json to sync from"
    )
    parser.set_defaults(run=cmd_update_agents)


def cmd_update_agents(args: argparse.Namespace) -> int:
    from guard.identity.sync import SyncError, update_agents
    from guard.policy.rules import load_rules

    catalogue = load_rules(_rules_path(args)).catalogue
    try:
        report, snapshot = update_agents(catalogue.source, args.url, timeout=args.timeout, dry_run=args.dry_run)
    except SyncError as exc:
        raise CommandError(f"{exc}; kept {catalogue.synced_file or 'the catalogue'} as it was") from None
    print("\n".join(report.lines(snapshot)))
    print(f"{'would write' if args.dry_run else 'written to'} {catalogue.synced_file}")
    if catalogue.lists_file is not None:  # the public crawler lists, when the catalogue names a snapshot
        from guard.identity.crawlerlists import update_lists

        urls = {"crawler-user-agents": args.crawler_user_agents_url, "well-known-bots": args.well_known_bots_url}
        try:
            lines, _ = update_lists(catalogue.source, urls, timeout=args.timeout, dry_run=args.dry_run)
        except SyncError as exc:
            raise CommandError(f"{exc}; kept {catalogue.lists_file} as it was") from None
        print("\n".join(lines))
        print(f"{'would write' if args.dry_run else 'written to'} {catalogue.lists_file}")
    return 0


# -- guard robots --------------------------------------------------------------------------------


def add_robots(sub: SubParsers) -> None:
    parser = sub.add_parser("robots", help="print the robots.txt (or ai.txt) generated from a rules file")
    options = Options(parser)
    _rules_option(options)
    options.add("--ai-txt", action="store_true", help="print ai.txt instead")
    parser.set_defaults(run=cmd_robots)


def cmd_robots(args: argparse.Namespace) -> int:
    from guard.policy.rules import load_rules
    from guard.signals.directives import ai_txt, robots_txt

    policy = load_rules(_rules_path(args))
    sys.stdout.write(ai_txt(policy) if args.ai_txt else robots_txt(policy))
    return 0


# -- the command ---------------------------------------------------------------------------------

#: The subcommands, in the order ``guard --help`` lists them. Add yours here.
COMMANDS: list[Callable[[SubParsers], None]] = [
    add_init,
    add_keygen,
    add_demo,
    add_serve,
    add_check,
    add_schema,
    add_explain,
    add_top,
    add_update_ranges,
    add_update_signers,
    add_update_agents,
    add_robots,
    add_consent,
    add_license,
]


def build_parser() -> argparse.ArgumentParser:
    from guard import __version__

    parser = Parser(
        prog="guard",
        description="Keep AI-training crawlers and bulk scrapers off a music platform.",
        epilog="Exit status: 0 ok, 1 the command failed, 2 the command line is wrong.",
    )
    parser.add_argument("--version", action="version", version=f"guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def report(error: ConfigError) -> None:
    """One error line per problem of a configuration file (``guard check`` and start-up alike)."""
    for problem in error.problems:
        fail(str(problem))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        report(exc)
    except (CommandError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback; GUARD_DEBUG=1 shows it
        if os.environ.get("GUARD_DEBUG"):
            raise
        fail(f"{type(exc).__name__}: {exc}")
    return FAILED


if __name__ == "__main__":
    sys.exit(main())
