"""Which track ids are canaries: derived from a secret in a range the application never issues."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable

log = logging.getLogger("guard")


def derive_ids(key: bytes, count: int, low: int, high: int) -> tuple[str, ...]:
    """``count`` distinct ids in ``[low, high]``, each an HMAC-SHA256 of ``key`` and its index.

    Without the key nobody can tell them from other ids of the range; with it, every
    instance derives the same ones (so a link served by one instance traps on another).
    """
    span = high - low + 1
    found: list[str] = []
    seen: set[int] = set()
    index = 0
    while len(found) < min(count, span):
        digest = hmac.new(key, f"guard canary {index}".encode(), hashlib.sha256).digest()
        value = low + int.from_bytes(digest[:16], "big") % span
        index += 1
        if value not in seen:
            seen.add(value)
            found.append(str(value))
    return tuple(found)


def canary_key(env: str, fallback_env: str) -> bytes | None:
    """The canary secret from ``$env``, else ``$fallback_env`` (the session key); None when neither is set."""
    for name in (env, fallback_env):
        value = os.environ.get(name, "").strip()
        if value:
            return hashlib.sha256(b"guard canaries:" + value.encode()).digest()
    return None


def random_key() -> bytes:
    """A canary secret for this process alone (see :func:`warn_random_key`)."""
    return secrets.token_bytes(32)


def warn_random_key(env: str, fallback_env: str) -> None:
    """Said once when a process that serves traffic has no shared canary key."""
    log.warning(
        "guard: no $%s or $%s: canary ids are random for this process; instances behind one "
        "site should share the key so that a link served by one traps on all",
        env,
        fallback_env,
    )


class CanaryIds:
    """The set of canary ids (canonical track ids, as :class:`guard.policy.paths.PathMatch` gives them).

    Membership is one set lookup. :meth:`register` adds the application's own (unpublished
    tracks, retired ids that were never linked).
    """

    __slots__ = ("_all", "derived")

    def __init__(self, derived: Iterable[str], registered: Iterable[str] = ()) -> None:
        self.derived = tuple(derived)
        self._all: frozenset[str] = frozenset((*self.derived, *registered))

    def __contains__(self, track: object) -> bool:
        return track in self._all

    def __len__(self) -> int:
        return len(self._all)

    def register(self, ids: Iterable[str | int]) -> None:
        """Add ids the application knows no person can reach."""
        self._all = self._all | {str(i) for i in ids}

    def linked(self, n: int) -> tuple[str, ...]:
        """The first ``n`` derived ids: the ones baited links point to."""
        return self.derived[:n]
