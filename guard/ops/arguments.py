"""Command-line plumbing: one-line errors, checked argument types, options backed by environment variables.

Every argument is checked while it is parsed, so a typo is a usage error (exit status 2)
with one line on stderr, never a traceback from deep inside a command.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

#: Exit status of a command that ran and failed (bad file, unreachable service).
FAILED = 1
#: Exit status of a command line that was wrong (argparse's convention).
USAGE = 2


class CommandError(Exception):
    """A runtime failure a command reports as ``guard: error: <message>`` (exit status 1)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``guard: error: <message> (see guard <command> --help)``."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(USAGE, f"guard: error: {message}{hint}\n")


def fail(message: str) -> None:
    """Print one error line to stderr."""
    print(f"guard: error: {message}", file=sys.stderr)


# -- argument types: each raises ArgumentTypeError with a sentence argparse prints -------------


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, e.g. ``203.0.113.9`` or ``2001:db8::1``."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def cidr(text: str) -> str:
    """A network such as ``10.0.0.0/8`` or ``2001:db8::/32`` (a bare address means that one address)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a network (CIDR such as 10.0.0.0/8)") from None


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def redis_url(text: str) -> str:
    """``redis://host:port/db``, ``rediss://...``, ``unix:///path`` or ``redis+cluster://host:port``."""
    parts = urlsplit(text)
    if parts.scheme not in REDIS_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Redis URL (redis://host:port/db, rediss://..., unix:///path or redis+cluster://host:port)"
        )
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the port is not a number from 0 to 65535") from None
    if parts.scheme == "unix" and not parts.path:
        raise argparse.ArgumentTypeError(f"{text!r} names no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} names no host")
    return text


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text


def number(
    kind: Callable[[str], Any], low: float, high: float | None = None, *, above: bool = False
) -> Callable[[str], Any]:
    """A type for ``int`` or ``float`` arguments from ``low`` (excluded when ``above``) up to ``high``."""
    noun = "a whole number" if kind is int else "a number"
    bounds = f"greater than {low}" if above else f"from {low} to {high}" if high is not None else f"at least {low}"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        too_low = value <= low if above else value < low
        if value != value or too_low or (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give {noun} {bounds}")
        return value

    convert.__name__ = kind.__name__
    return convert


port = number(int, 0, 65535)


def url_path(text: str) -> str:
    """A request path, starting with ``/`` (a query string may follow)."""
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a path (it must start with /)")
    return text


def header(text: str) -> tuple[str, str]:
    """``'Name: value'`` as a (name, value) pair."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a header (write it as 'Name: value')")
    return name, value.strip()


def existing_file(text: str) -> str:
    """A path to a file that exists (checked at parse time; reading it may still fail later)."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return text


# -- options with an environment fallback -------------------------------------------------------


class Options:
    """Adds one subcommand's options; an option may fall back on an environment variable.

    The help line of each option ends with its environment variable and default, and the
    variable's value is checked with the option's own type after parsing, so a bad
    ``GUARD_TRUSTED_PROXIES`` is the same one-line usage error as a bad ``--trusted-proxy``.
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self._env: list[tuple[str, str, Callable[[str], Any], bool]] = []
        parser.set_defaults(_options=self)

    def add(
        self,
        *flags: str,
        env: str | None = None,
        default: Any = None,
        type: Callable[[str], Any] | None = None,
        help: str = "",
        shown: str | None = None,
        show_default: bool = True,
        **kwargs: Any,
    ) -> argparse.Action:
        """``parser.add_argument`` plus ``env`` (the variable it falls back on) and ``shown`` (the default in words)."""
        notes = []
        if env:
            notes.append(f"env {env}")
        if show_default and kwargs.get("action") not in ("store_true", "store_false"):
            notes.append(f"default: {shown or (default if default is not None else 'none')}")
        text = f"{help} [{'; '.join(notes)}]" if notes else help
        if type is not None:
            kwargs["type"] = type
        action = self.parser.add_argument(*flags, default=None if env else default, help=text, **kwargs)
        if env:
            many = kwargs.get("action") in ("append", "extend")
            self._env.append((action.dest, env, type or str, many))
            if default is not None:
                self.parser.set_defaults(**{f"_default_{action.dest}": default})
        return action

    def apply_env(self, args: argparse.Namespace) -> None:
        """Fill options left unset from their environment variables (checked with the option's type)."""
        for dest, env, convert, many in self._env:
            if getattr(args, dest) is not None:
                continue
            raw = os.environ.get(env, "")
            if raw.strip():
                try:
                    value = [convert(part) for part in raw.replace(",", " ").split()] if many else convert(raw)
                except argparse.ArgumentTypeError as exc:
                    self.parser.error(f"{env}: {exc}")
                setattr(args, dest, value)
            else:
                setattr(args, dest, getattr(args, f"_default_{dest}", None))


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and fill environment-backed options of the chosen subcommand."""
    args = parser.parse_args(argv)
    options = getattr(args, "_options", None)
    if options is not None:
        options.apply_env(args)
    return args
