"""The interface every counter store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from guard.policy.limits import Check, Verdict


class Store(Protocol):
    """Applies all of one request's checks atomically and returns the verdict.

    Semantics (shared by every store, see guard.policy.limits):

    1. If any check's key is banned, the first such check denies with the ban's remaining time.
    2. Otherwise the checks are evaluated in order without changing anything; the first
       that would be exceeded denies. A denial adds a strike to that check's key when it
       has a Ban, and enough strikes start a ban.
    3. If none denies, every check records the request.
    """

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        """Apply ``checks`` at time ``now`` (seconds) and return the verdict."""
        ...

    async def peek(self, now: float, checks: Sequence[Check]) -> list[dict[str, Any]]:
        """The state of each check's counters at ``now``, without counting anything (for ``guard explain``)."""
        ...

    async def close(self) -> None:
        """Release connections or other resources."""
        ...
