"""The embedded store: counters in this process's memory, bounded in size.

Every key (GCRA timestamp, distinct-value window, strike counter, ban) is one entry, at
most ``max_entries`` in all, in one of three tables by what the entry protects:

* bans, and what they hold (an address's hold, a subnet's banned addresses, the hash
  tag's marker): a tenth of the bound, least recently written evicted first;
* what leads to a ban or a day's refusal (budgets, windows longer than an hour, strike
  counters): half of the rest, evicting the dead first, else the cheapest: the entry
  whose loss gives back least (:class:`~guard.lru.CheapestFirst`);
* the short windows and request rates: the rest, least recently written evicted first.

A scraper rotating through a million addresses or User-Agents evicts its own short
windows instead of growing memory (the address and subnet limits still see it); a flood
of new keys, each counting one, cannot push out a budget that counts hundreds, nor a
running ban. The arithmetic
is the Redis store's Lua script (lua/apply.lua) step for step, in whole microseconds, so
both give the same verdicts. An hour or day budget is one entry too: a
:class:`~guard.stores.hll.SlicedSketch` (sparse HyperLogLog slices computing Redis's own
registers and estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.lru import LRU, CheapestFirst
from guard.policy.limits import (
    ALLOWED,
    ESCALATE_ADDRESSES,
    ESCALATE_UAS,
    SEEN_FOR_US,
    SEEN_MAX,
    SEEN_REFRESH_US,
    SUBNET_SHARE,
    Budget,
    Check,
    DistinctLimit,
    Escalation,
    RateLimit,
    Verdict,
    to_us,
    under_session_tag,
)
from guard.stores.hll import SLICES, SlicedSketch, register_of

LASTING_US = 3_600_000_000  # windows longer than this (and every budget) are kept in the lasting table
UNITS_PER_ENTRY = 8  # the lasting table's memory: registers and window values per entry on average
MIN_UNITS = 65_536  # and at least this many (a small store still holds a busy address's day budget)


class MemoryStore:
    """In-process store; see :class:`guard.stores.base.Store` for the semantics."""

    def __init__(self, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        # Reads never refresh an entry. Bans and holds; what leads to a ban or a day's refusal
        # (cheapest evicted first); and the short windows and rates (LRU): see the module's docstring.
        held = max(1, max_entries // 10)
        lasting = max(1, (max_entries - held) // 2)
        self._held: LRU[str, Any] = LRU(held)
        # Its memory is bounded in registers and window values too: a budget's register takes
        # about 330 bytes, so about UNITS_PER_ENTRY * 330 bytes an entry (240 MB for 200,000 entries).
        units = max(lasting * UNITS_PER_ENTRY, MIN_UNITS)
        self._lasting: CheapestFirst[str, Any] = CheapestFirst(lasting, units)
        self._entries: LRU[str, Any] = LRU(max(1, max_entries - held - lasting))
        # Bans ever started (an upper bound on those alive): lets the common case skip ban lookups.
        self._bans = 0

    def __len__(self) -> int:
        return len(self._entries) + len(self._lasting) + len(self._held)

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        return self.apply_sync(now, checks)

    def apply_sync(self, now: float, checks: Sequence[Check]) -> Verdict:
        """:meth:`apply` without the coroutine, for callers outside an event loop."""
        now_us = to_us(now)
        entries = self._entries
        if self._bans:
            held = self._held.peek
            # Any ban, hold, address or subnet ban alive under the request's hash tag (its marker);
            # None: the checks' keys name no one marker, every ban is looked up.
            # A session's own checks have their own tag, and marker (see request_marker).
            marker, own_marker, own = request_marker(checks)
            scoped: bool | None = (held(marker) or 0) > now_us if marker is not None else None
            own_scoped = own_marker is not None and (held(own_marker) or 0) > now_us
            for i, check in enumerate(checks):
                if marker is not None and not scoped and not own_scoped:
                    break  # nothing is banned under the request's tags
                if check.ban is not None:
                    until = held(check.ban_key) if (own_scoped if i in own else scoped) is not False else None
                    if until is not None and until > now_us:
                        return Verdict.from_us(i, until - now_us, until)
                    if check.escalation is not None:
                        if scoped is None:
                            scoped = (held(check.escalation.marker) or 0) > now_us
                        until = self._scoped_ban(now_us, check, check.escalation) if scoped else None
                        if until is not None:
                            return Verdict.from_us(i, until - now_us, until)

        # Evaluate every check first (nothing changes), then record them all. The table is
        # used directly: its plain dict reads, and moving a written key to the young end.
        data = entries._data
        get = data.get
        updates: list[tuple[str, Any, Any, Any]] = []  # key, value, item, limit (None: a short entry)
        shadowed: list[int] = []
        escalation: Escalation | None = None
        for i, check in enumerate(checks):
            limit = check.limit
            kind = type(limit)
            if kind is not RateLimit and kind is not Budget and kind is not DistinctLimit:
                kind = limit_kind(limit)  # a subclass
            if kind is RateLimit:
                key = check.key
                tat = get(key)
                new_tat = (tat if tat is not None and tat > now_us else now_us) + limit.interval_us  # type: ignore[union-attr]
                allow_at = new_tat - limit.tolerance_us  # type: ignore[union-attr]
                if allow_at > now_us:
                    if check.shadow:
                        shadowed.append(i)
                        continue
                    return self._deny(now_us, i, check, allow_at - now_us, shadowed)
                updates.append((key, new_tat, None, None))
            elif check.item is None:
                continue  # counts nothing on this request: its ban (looked up above) alone
            elif kind is Budget:
                register = register_of(check.item)  # (cached: a request's budgets often share the value)
                sketch, retry_us = self._budget(check.key, limit, now_us, register)  # type: ignore[arg-type]
                if retry_us is not None:
                    if check.shadow:
                        shadowed.append(i)
                        continue
                    return self._deny(now_us, i, check, retry_us, shadowed)
                updates.append((check.key, sketch, register, limit))
            else:
                lasting = limit.per_us > LASTING_US  # type: ignore[union-attr]
                window = self._window(check.key, now_us - limit.per_us, lasting)  # type: ignore[union-attr]
                if check.item not in window and len(window) >= limit.max:  # type: ignore[union-attr]
                    if check.shadow:
                        shadowed.append(i)
                        continue
                    oldest = next(iter(window.values()))
                    return self._deny(now_us, i, check, oldest + limit.per_us - now_us, shadowed)  # type: ignore[union-attr]
                updates.append((check.key, window, check.item, limit if lasting else None))
            if escalation is None and check.escalation is not None and check.escalation.scope == "client":
                escalation = check.escalation

        move, size, evict = data.move_to_end, entries.size, data.popitem
        for key, value, item, lasting in updates:  # LRU.put, inline
            if item is not None:
                if type(value) is dict:
                    value.pop(item, None)  # re-insert: the window stays ordered by last sight
                    value[item] = now_us
                else:
                    value.add_register(*item)
            if lasting is not None:
                self._keep(key, value, lasting, now_us)
                continue
            data[key] = value
            move(key)
            if len(data) > size:
                evict(last=False)
        if escalation is None:  # a shadowed check's escalation is remembered too
            escalation = next((c.escalation for c in checks if c.escalation and c.escalation.scope == "client"), None)
        if escalation is not None:
            self._remember_ua(now_us, escalation)
        return Verdict(shadowed=tuple(shadowed)) if shadowed else ALLOWED

    async def peek(self, now: float, checks: Sequence[Check]) -> list[dict[str, Any]]:
        """Each check's counters as they stand, changing nothing (for ``guard explain``)."""
        get, kept, held = self._entries.peek, self._lasting.peek, self._held.peek
        now_us = to_us(now)
        return [
            budget_state(kept(c.key), now_us, c, held(c.ban_key))
            if isinstance(c.limit, Budget)
            else peek_entry(
                {
                    "window": (kept(c.key) or get(c.key)) if isinstance(c.limit, DistinctLimit) else None,
                    "tat": None if isinstance(c.limit, DistinctLimit) else get(c.key),
                    "strikes": kept(c.strike_key),
                    "ban": held(c.ban_key),
                },
                now_us,
                c,
            )
            for c in checks
        ]

    async def peek_scopes(self, now: float, checks: Sequence[Check]) -> list[dict[str, Any] | None]:
        """Each check's ban scope as it stands (None: no scope beyond its key), for ``guard explain``."""
        now_us, get = to_us(now), self._held.peek
        states: list[dict[str, Any] | None] = []
        for c in checks:
            e = c.escalation
            if e is None:
                states.append(None)
                continue
            hold = get(e.address_key + ":h")
            first = self._seen(now_us, e).get(e.ua) or e.since or None
            address_ban, subnet_ban = get(e.address_key + ":b"), get(e.subnet_key + ":b")
            states.append(scope_state(c, e, now_us, address_ban, subnet_ban, hold[:2] if hold else None, first))
        return states

    async def close(self) -> None:
        self._entries.clear()
        self._lasting.clear()
        self._held.clear()

    # -- internals ------------------------------------------------------------------

    def _deny(self, now_us: int, index: int, check: Check, retry_us: int, shadowed: list[int]) -> Verdict:
        ban = check.ban
        if ban is None:
            return Verdict.from_us(index, retry_us, None, tuple(shadowed))
        kept = self._lasting
        strikes = kept.peek(check.strike_key)
        if strikes is None or strikes[1] <= now_us:
            strikes = [0, now_us + ban.within_us]
        strikes[0] += 1
        if strikes[0] >= ban.after:
            kept.pop(check.strike_key)
            until = now_us + ban.duration_us
            self._held.put(check.ban_key, until)
            self._bans += 1
            marker = marker_of(check.key)
            if marker is not None:
                self._held.put(marker, max(until, self._held.peek(marker) or 0))
            if check.escalation is not None:
                self._escalate(now_us, check, check.escalation, until)
            return Verdict.from_us(index, ban.duration_us, until, tuple(shadowed))
        kept.put(check.strike_key, strikes, strikes[0], 1, strikes[1], now_us)
        return Verdict.from_us(index, retry_us, None, tuple(shadowed))

    def _keep(self, key: str, value: Any, limit: Budget | DistinctLimit, now_us: int) -> None:
        """Write a budget or long window: its weight is what it counts, it is dead once its window is empty."""
        if isinstance(limit, DistinctLimit):
            self._lasting.put(key, value, len(value), len(value) + 1, now_us + limit.per_us, now_us)
        else:  # a budget's sketch: about one register per value counted, dead when its newest slice leaves
            expires = (value.current + SLICES) * limit.slice_us
            self._lasting.put(key, value, len(value.union), len(value.registers) + 1, expires, now_us)

    def _budget(
        self, key: str, limit: Budget, now_us: int, register: tuple[int, int]
    ) -> tuple[SlicedSketch, int | None]:
        """The budget's sketch at ``key`` moved to now, and the wait (None: the value whose
        ``register`` is given fits)."""
        sketch = self._lasting.peek(key)
        if sketch is None:
            sketch = SlicedSketch()
        current = now_us // limit.slice_us
        if current != sketch.current:
            sketch.advance(current)
        if sketch.count_with_register(*register) <= limit.max:
            return sketch, None
        return sketch, budget_retry_us(sketch.oldest(), limit, now_us)

    # -- ban scopes (docs/bans.md; the same steps as the ban-scope functions of lua/apply.lua) --

    def _scoped_ban(self, now_us: int, check: Check, e: Escalation) -> int | None:
        """When the check's address or subnet is banned, or its address is held and this
        device is new there (it then inherits the ban): the ban's end; else None."""
        get = self._held.peek
        for key in (e.address_key, e.subnet_key):
            if key != check.key:
                until = get(key + ":b")
                if until is not None and until > now_us:
                    return until
        if e.scope == "client":
            hold = get(e.address_key + ":h")
            if hold is not None and hold[1] > now_us:
                first = self._seen(now_us, e).get(e.ua) or e.since or None
                if first is None or first >= hold[0]:
                    self._held.put(check.ban_key, hold[1])
                    return hold[1]
        return None

    def _escalate(self, now_us: int, check: Check, e: Escalation, until: int) -> None:
        """A ban just started on ``check.key``: hold its address, and escalate when it is one too many."""
        assert check.ban is not None
        entries = self._held
        if e.scope == "subnet":
            self._ban_until(e, e.subnet_key, until, check.key)
            return
        if e.scope == "client":
            hold = entries.peek(e.address_key + ":h")
            if hold is None or hold[1] <= now_us:
                hold = [now_us, 0, 0]  # start, end, User-Agents banned
            hold[1] = max(hold[1], until)
            hold[2] += 1
            entries.put(e.address_key + ":h", hold)
            self._mark(e, hold[1])
            self._forget_device(now_us, e)
            if hold[2] < ESCALATE_UAS:
                return
        self._ban_until(e, e.address_key, until, check.key)
        banned = entries.peek(e.subnet_key + ":e") or {}
        banned = {address: end for address, end in banned.items() if end > now_us}
        banned[e.address_key] = until
        entries.put(e.subnet_key + ":e", banned)
        if len(banned) >= ESCALATE_ADDRESSES:
            self._ban_until(e, e.subnet_key, now_us + round(check.ban.duration_us * SUBNET_SHARE), check.key)

    def _ban_until(self, e: Escalation, key: str, until: int, own: str) -> None:
        if key != own:
            value = max(until, self._held.peek(key + ":b") or 0)
            self._held.put(key + ":b", value)
            self._bans += 1
            self._mark(e, value)

    def _mark(self, e: Escalation, until: int) -> None:
        self._held.put(e.marker, max(until, self._held.peek(e.marker) or 0))

    def _seen(self, now_us: int, e: Escalation) -> dict[str, int]:
        """The User-Agents seen on the address (hash: first sight), if the record is alive."""
        record = self._entries.peek(e.seen_key)
        return record[1] if record is not None and record[0] > now_us else {}

    def _forget_device(self, now_us: int, e: Escalation) -> None:
        """The banned device counts as first seen now: under another User-Agent it is new there."""
        record = self._entries.peek(e.seen_key)
        ends, seen = record if record is not None and record[0] > now_us else (now_us + SEEN_FOR_US, {})
        seen[e.ua] = now_us
        self._entries.put(e.seen_key, (ends, seen))

    def _remember_ua(self, now_us: int, e: Escalation) -> None:
        record = self._entries.peek(e.seen_key)
        ends, seen = record if record is not None and record[0] > now_us else (0, {})
        if e.ua in seen and ends - now_us > SEEN_REFRESH_US:
            return  # known, and the record is fresh: nothing to write
        if e.ua not in seen and len(seen) < SEEN_MAX:
            seen[e.ua] = min(now_us, e.since) if e.since else now_us  # a session: seen since issued
        self._entries.put(e.seen_key, (now_us + SEEN_FOR_US, seen))

    def _window(self, key: str, horizon_us: int, lasting: bool) -> dict[str, int]:
        """The distinct-value window at ``key`` (in the lasting table, or the short one), values
        last seen at or before ``horizon_us`` dropped.

        The dict is ordered by last sight, so stale values are at its front.
        """
        window = (self._lasting if lasting else self._entries).peek(key)
        if window is None:
            return {}
        while window:
            item, seen = next(iter(window.items()))
            if seen > horizon_us:
                break
            del window[item]
        return window


def limit_kind(limit: Any) -> type:
    """Which of the three limits ``limit`` is (for subclasses of them)."""
    return next(kind for kind in (RateLimit, Budget, DistinctLimit) if isinstance(limit, kind))


def marker_of(key: str) -> str | None:
    """The marker of a key's hash tag (``prefix{tag}:scoped``): the latest end of any ban under it."""
    end = key.find("}:")
    return key[: end + 2] + "scoped" if end >= 0 else None


def request_marker(checks: Sequence[Check]) -> tuple[str | None, str | None, tuple[int, ...]]:
    """The marker all of a request's keys (and ban scopes) share, or None when they name no one
    marker; and the checks under a session's own hash tag (see :func:`under_session_tag`), left
    out of it, with the marker they share (None: no such checks)."""
    head = marker = own_marker = None
    own: list[int] = []
    for i, check in enumerate(checks):
        key = check.key
        if head is not None and key.startswith(head) and key.find("}:") == len(head) - 2:
            continue
        if under_session_tag(key):
            if own_marker is None:
                own_marker = marker_of(key)
            elif not key.startswith(own_marker[:-6]):
                return None, None, ()
            own.append(i)
        elif head is None:
            marker = marker_of(key)
            if marker is None:
                return None, None, ()
            head = marker[:-6]  # the keys' common prefix, "prefix{tag}:"
        else:
            return None, None, ()
    if marker is None:
        return None, None, ()
    for check in checks:
        if check.escalation is not None and check.escalation.marker != marker:
            return None, None, ()
    return marker, own_marker, tuple(own)


def peek_entry(entries: Any, now_us: int, check: Check) -> dict[str, Any]:
    """The state of one check's counters, read only (shared by the stores' ``peek``)."""
    limit = check.limit
    state: dict[str, Any] = {"key": check.key}
    if isinstance(limit, DistinctLimit):
        window = entries.get("window") or {}
        live = {item: seen for item, seen in window.items() if seen > now_us - limit.per_us}
        state.update(
            kind="distinct",
            count=len(live),
            max=limit.max,
            per=limit.per,
            item=check.item,
            item_seen=check.item in live if check.item is not None else None,
        )
        state["would_deny"] = check.item is not None and check.item not in live and len(live) >= limit.max
    else:
        assert isinstance(limit, RateLimit)  # budgets have their own state: budget_state
        tat = max(entries.get("tat") or now_us, now_us)
        used = (tat - now_us) / limit.interval_us  # requests "in flight" in the bucket
        state.update(
            kind="rate",
            requests=limit.requests,
            per=limit.per,
            burst=limit.burst,
            burst_left=max(0, int(limit.burst - used)),
        )
        state["would_deny"] = tat + limit.interval_us - limit.tolerance_us > now_us
    strikes = entries.get("strikes")
    if strikes and strikes[1] > now_us:
        state["strikes"] = strikes[0]
    until = entries.get("ban")
    if until and until > now_us:
        state["banned_for"] = round((until - now_us) / 1e6, 3)
        state["would_deny"] = True
    return state


def scope_state(
    check: Check,
    e: Escalation,
    now_us: int,
    address_ban: int | None,
    subnet_ban: int | None,
    hold: Sequence[int] | None,
    first_seen: int | None,
) -> dict[str, Any]:
    """A check's ban scope in words and seconds (shared by the stores' ``peek_scopes``)."""
    state: dict[str, Any] = {"scope": e.scope}
    if e.address_key != check.key and address_ban and address_ban > now_us:
        state["address_banned_for"] = round((address_ban - now_us) / 1e6, 3)
    if e.subnet_key != check.key and subnet_ban and subnet_ban > now_us:
        state["subnet_banned_for"] = round((subnet_ban - now_us) / 1e6, 3)
    if e.scope == "client" and hold and hold[1] > now_us:
        state["address_held_for"] = round((hold[1] - now_us) / 1e6, 3)
        state["user_agent_new_here"] = first_seen is None or first_seen >= hold[0]
        if state["user_agent_new_here"]:
            state["inherits_ban_for"] = state["address_held_for"]
    return state


def budget_retry_us(oldest: int | None, limit: Budget, now_us: int) -> int:
    """How long until a full budget has room: when its oldest non-empty slice leaves the window."""
    if oldest is None:
        return limit.slice_us
    return (oldest + SLICES) * limit.slice_us - now_us


def budget_state(sketch: SlicedSketch | None, now_us: int, check: Check, ban: int | None = None) -> dict[str, Any]:
    """The state of one budget in the memory store, read only (for ``guard explain``)."""
    limit = check.limit
    assert isinstance(limit, Budget)
    count = with_item = 0
    if sketch is not None:
        sketch = sketch.copy()
        sketch.advance(now_us // limit.slice_us)
        count = sketch.total()
        with_item = sketch.count_with(check.item) if check.item is not None else count
    state: dict[str, Any] = {
        "key": check.key,
        "kind": "budget",
        "count": count,
        "max": limit.max,
        "per": limit.per,
        "item": check.item,
        "would_deny": check.item is not None and with_item > limit.max,
    }
    if ban and ban > now_us:
        state["banned_for"] = round((ban - now_us) / 1e6, 3)
        state["would_deny"] = True
    return state
