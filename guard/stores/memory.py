"""The embedded store: counters in this process's memory, bounded in size.

Every key (GCRA timestamp, distinct-value window, strike counter, ban) is one entry in a
single LRU table of at most ``max_entries``. A scraper rotating through a million
addresses evicts its own oldest entries instead of growing memory; the subnet-level
limits still see it. Expired state is dropped when touched. The arithmetic is the same
as the Redis store's Lua script, line for line, so both give the same verdicts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from guard.limits import ALLOWED, Check, DistinctLimit, Verdict


class MemoryStore:
    """In-process store; see :class:`guard.stores.base.Store` for the semantics."""

    def __init__(self, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        return self.apply_sync(now, checks)

    def apply_sync(self, now: float, checks: Sequence[Check]) -> Verdict:
        """:meth:`apply` without the coroutine, for callers outside an event loop."""
        for i, check in enumerate(checks):
            if check.ban is not None:
                until = self._get(check.ban_key)
                if until is not None and until > now:
                    return Verdict(i, until - now, until)

        updates: list[tuple[str, Any]] = []
        for i, check in enumerate(checks):
            limit = check.limit
            if isinstance(limit, DistinctLimit):
                if check.item is None:
                    continue
                window = self._window(check.key, now - limit.per)
                if check.item not in window and len(window) >= limit.max:
                    oldest = next(iter(window.values()))
                    return self._deny(now, i, check, oldest + limit.per - now)
                updates.append((check.key, (window, check.item)))
            else:
                tat = self._get(check.key)
                new_tat = max(tat if tat is not None else now, now) + limit.interval
                allow_at = new_tat - limit.tolerance
                if allow_at > now:
                    return self._deny(now, i, check, allow_at - now)
                updates.append((check.key, new_tat))

        for key, value in updates:
            if isinstance(value, tuple):
                window, item = value
                window.pop(item, None)  # re-insert: the dict stays ordered by last seen
                window[item] = now
                self._put(key, window)
            else:
                self._put(key, value)
        return ALLOWED

    async def close(self) -> None:
        self._entries.clear()

    # -- internals ------------------------------------------------------------------

    def _deny(self, now: float, index: int, check: Check, retry_after: float) -> Verdict:
        ban = check.ban
        if ban is None:
            return Verdict(index, retry_after)
        strikes = self._get(check.strike_key)
        if strikes is None or strikes[1] <= now:
            strikes = [0, now + ban.within]
        strikes[0] += 1
        if strikes[0] >= ban.after:
            self._entries.pop(check.strike_key, None)
            until = now + ban.duration
            self._put(check.ban_key, until)
            return Verdict(index, ban.duration, until)
        self._put(check.strike_key, strikes)
        return Verdict(index, retry_after)

    def _window(self, key: str, horizon: float) -> dict[str, float]:
        """The distinct-value window at ``key``, values last seen at or before ``horizon`` dropped.

        The dict is ordered by last sight, so stale values are at its front.
        """
        window = self._entries.get(key)
        if window is None:
            return {}
        while window:
            item, seen = next(iter(window.items()))
            if seen > horizon:
                break
            del window[item]
        return window

    def _get(self, key: str) -> Any:
        return self._entries.get(key)

    def _put(self, key: str, value: Any) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
