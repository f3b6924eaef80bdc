"""The shared store: counters in Redis (or Redis Cluster), one round trip per request.

Every request's checks run atomically in one Lua script (``lua/apply.lua``), called by
EVALSHA; on NOSCRIPT (first use, a restarted or new node) it is sent once with EVAL,
which caches it there again. All of a request's keys carry its subnet as hash tag, so
its part of the script touches one slot and works unchanged on a cluster. Keys expire
by themselves.

Batching: a Redis call costs far more event-loop time in redis-py than the guard's own
work, so the requests that arrive in the same event-loop tick are sent together: one
EVALSHA carries all of them (one per hash slot on a cluster), and the script evaluates
them one after the other, each atomically, exactly as one call per request would. Each
request still makes at most one round trip; under load the per-request cost drops with
the batch size. The price: a request waits for the tick to end before its call leaves
(microseconds), and a failed call fails its whole batch over to the fallback together.

Redis trouble never takes the site down. Each call has a short timeout. On failure the
store goes *down*: in ``fail="open"`` mode (default) requests are counted by a local
:class:`MemoryStore` instead, so the worst scrapers are still stopped by this instance;
in ``fail="closed"`` mode counted requests are throttled. While down, Redis is retried
with exponential backoff (one probe call at a time), and recovery is automatic. State
changes are logged once each, not per request; ``stats`` counts fallbacks and time down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

try:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.cluster import key_slot
    from redis.exceptions import NoScriptError
except ImportError as exc:  # an optional extra: the memory store needs none of it
    raise ImportError("the Redis store needs redis-py: pip install 'guard-asgi[redis]'") from exc

from guard.lru import LRU
from guard.policy.limits import (
    ALLOWED,
    ESCALATE_ADDRESSES,
    ESCALATE_UAS,
    SEEN_FOR_US,
    SEEN_MAX,
    SEEN_REFRESH_US,
    SUBNET_SHARE,
    Ban,
    Budget,
    Check,
    DistinctLimit,
    Escalation,
    Verdict,
    to_us,
)
from guard.stores.hll import SLICES
from guard.stores.memory import MemoryStore, peek_entry, scope_state

log = logging.getLogger("guard.redis")

SCRIPT = files("guard.stores").joinpath("lua/apply.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
FAIL_MODES = ("open", "closed")


@dataclass
class RedisStats:
    """Counters an SRE wants on a dashboard."""

    calls: int = 0
    errors: int = 0
    fallbacks: int = 0  # requests decided without Redis
    outages: int = 0  # transitions up -> down
    down_seconds: float = 0.0  # completed outages only; see RedisStore.down_for()


Pending = tuple[float, Sequence[Check], "asyncio.Future[Verdict]"]


def redis_client(url: str, **options: Any) -> Redis | RedisCluster:
    """A redis-py asyncio client: ``redis://host:port/db``, or ``redis+cluster://host:port`` for a cluster."""
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        return RedisCluster.from_url(url.replace("+cluster", "", 1), **options)
    return Redis.from_url(url, **options)


class RedisStore:
    """Store on redis-py asyncio; see :class:`guard.stores.base.Store` for the semantics.

    :param client: a ``redis.asyncio.Redis`` or ``RedisCluster``.
    :param timeout: seconds one call may take before the store counts Redis as down.
    :param fail: ``"open"`` (fall back to local counting) or ``"closed"`` (throttle).
    :param fallback: the local store used while Redis is down (default: a MemoryStore).
    :param clock: monotonic seconds, for backoff (injectable for tests).
    :param slack_ms: added to every key's expiry so app instances with skewed clocks agree.
    :param max_batch: most requests sent in one call.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout: float = 0.05,
        fail: str = "open",
        fallback: MemoryStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (0.5, 30.0),
        slack_ms: int = 60_000,
        max_batch: int = 64,
    ) -> None:
        if fail not in FAIL_MODES:
            raise ValueError(f"fail must be one of {FAIL_MODES}, not {fail!r}")
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.timeout = timeout
        self.fail = fail
        self.fallback = fallback if fallback is not None else MemoryStore()
        self.clock = clock
        self.backoff_min, self.backoff_max = backoff
        self.slack_ms = str(slack_ms)
        self.max_batch = max_batch
        self.stats = RedisStats()
        self._queue: list[Pending] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = self.backoff_min
        self._probing = False
        self._encoded: LRU[str, tuple] = LRU(65536)  # per key: its script line but the item

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """``redis://host:port/db`` for one server, ``redis+cluster://host:port`` for a cluster."""
        timeout = kwargs.get("timeout", 0.05)
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if not url.startswith(("redis+cluster://", "rediss+cluster://")):
            options["max_connections"] = 64
        return cls(redis_client(url, **options), **kwargs)

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def down_for(self) -> float:
        """Seconds the current outage has lasted (0 when Redis is up)."""
        return self.clock() - self._down_since if self._down_since is not None else 0.0

    async def apply(self, now: float, checks: Sequence[Check]) -> Verdict:
        if self._down_since is not None and (self._probing or self.clock() < self._retry_at):
            return await self._without_redis(now, checks)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._queue.append((now, checks, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    async def peek(self, now: float, checks: Sequence[Check]) -> list[dict[str, Any]]:
        """Each check's counters as they stand in Redis, read only (for ``guard explain``)."""
        now_us = to_us(now)
        async with self.client.pipeline(transaction=False) as pipe:
            for c in checks:
                if isinstance(c.limit, Budget):
                    pipe.pfcount(*budget_slice_keys(c.key, c.limit, now_us))
                elif isinstance(c.limit, DistinctLimit):
                    pipe.zrangebyscore(c.key, f"({now_us - c.limit.per_us}", "+inf", withscores=True)
                else:
                    pipe.get(c.key)
                pipe.hgetall(c.strike_key)
                pipe.get(c.ban_key)
            replies = await pipe.execute()
        states = []
        for n, c in enumerate(checks):
            counter, strikes, ban = replies[3 * n : 3 * n + 3]
            if isinstance(c.limit, Budget):
                states.append(budget_peek(c, int(counter), ban, now_us))
                continue
            entries: dict[str, Any] = {"ban": int(ban) if ban else None}
            if strikes:
                entries["strikes"] = [int(strikes[b"c"]), int(strikes[b"e"])]
            if isinstance(c.limit, DistinctLimit):
                entries["window"] = {member.decode(): int(score) for member, score in counter}
            else:
                entries["tat"] = int(counter) if counter else None
            states.append(peek_entry(entries, now_us, c))
        return states

    async def peek_scopes(self, now: float, checks: Sequence[Check]) -> list[dict[str, Any] | None]:
        """Each check's ban scope as it stands in Redis (None: none beyond its key), read only."""
        now_us = to_us(now)
        scoped = [c for c in checks if c.escalation is not None]
        async with self.client.pipeline(transaction=False) as pipe:
            for c in scoped:
                e = c.escalation
                assert e is not None
                pipe.get(e.address_key + ":b")
                pipe.get(e.subnet_key + ":b")
                pipe.hmget(e.address_key + ":h", "s", "u")
                pipe.zmscore(e.seen_key or e.address_key + ":seen", ["", e.ua or "-"])
            replies = await pipe.execute() if scoped else []
        found: dict[int, dict[str, Any]] = {}
        for n, c in enumerate(scoped):
            address_ban, subnet_ban, hold, (seen_end, first) = replies[4 * n : 4 * n + 4]
            e = c.escalation
            assert e is not None
            start_until = [int(v) for v in hold] if hold[0] is not None and hold[1] is not None else None
            first_seen = int(first) if first is not None and seen_end is not None and seen_end > now_us else None
            first_seen = first_seen or e.since or None
            found[id(c)] = scope_state(
                c, e, now_us, int(address_ban or 0), int(subnet_ban or 0), start_until, first_seen
            )
        return [found.get(id(c)) for c in checks]

    async def warn_if_evicting(self) -> str | None:
        """Log a warning (once, at start-up) when Redis's eviction policy could drop live budgets; return it."""
        try:
            problem = await eviction_problem(self.client)
        except Exception as exc:  # down, or INFO not allowed: the request path logs outages itself
            log.info("guard: could not read Redis's eviction policy (%s: %s)", type(exc).__name__, exc)
            return None
        if problem is not None:
            log.warning("guard: WARNING: %s", problem)
        return problem

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    # -- batching -------------------------------------------------------------------

    def _flush(self) -> None:
        """End of the tick: send what queued up, in batches of at most ``max_batch``."""
        self._flush_scheduled = False
        queue, self._queue = self._queue, []
        groups: dict[int, list[Pending]] = {}
        for pending in queue:
            slot = key_slot(pending[1][0].key.encode()) if self.cluster else 0
            groups.setdefault(slot, []).append(pending)
        for group in groups.values():
            task = asyncio.get_running_loop().create_task(self._send_in_order(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_in_order(self, group: list[Pending]) -> None:
        # Requests of one slot may share keys: their batches go one after the other, in
        # arrival order. Different slots share no keys and go out concurrently.
        for start in range(0, len(group), self.max_batch):
            await self._send(group[start : start + self.max_batch])

    async def _send(self, batch: list[Pending]) -> None:
        if self._down_since is not None:
            if self._probing or self.clock() < self._retry_at:
                await self._fall_back(batch)
                return
            self._probing = True  # this batch probes; the others keep falling back
        keys = [pending[1][0].key for pending in batch]
        args = [self.slack_ms, *(self._encode(now, checks) for now, checks, _ in batch)]
        self.stats.calls += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._evalsha(keys, args)
        except Exception as exc:  # timeouts, refused connections, cluster errors...
            self.stats.errors += 1
            self._went_down(exc)
            await self._fall_back(batch)
            return
        finally:
            self._probing = False
        if self._down_since is not None:
            self._came_back()
        for n, (_, _, future) in enumerate(batch):
            denied, retry_us, until_us, mask = (int(x) for x in reply[4 * n : 4 * n + 4])
            shadowed = tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
            if denied == 0:
                verdict = Verdict(shadowed=shadowed) if shadowed else ALLOWED
            else:
                verdict = Verdict.from_us(denied - 1, retry_us, until_us or None, shadowed)
            if not future.done():
                future.set_result(verdict)

    async def _fall_back(self, batch: list[Pending]) -> None:
        for now, checks, future in batch:
            verdict = await self._without_redis(now, checks)
            if not future.done():
                future.set_result(verdict)

    # -- internals ------------------------------------------------------------------

    def _encode(self, now: float, checks: Sequence[Check]) -> str:
        """A request's line for the script: its time, then each check (see lua/apply.lua)."""
        lines = [str(to_us(now))]
        encoded = self._encoded
        for check in checks:
            # All but the item is the same for a key every time: written once, kept per key.
            known = encoded.peek(check.key)
            if (
                known is None
                or known[0] is not check.limit
                or known[1] is not check.ban
                or known[2] != check.escalation  # built per request: equal, not the same object
                or known[3] != check.shadow
            ):
                known = (check.limit, check.ban, check.escalation, check.shadow, *_check_lines(check))
                encoded.put(check.key, known)
            lines.append(known[4] + (check.item or ""))
            if known[5]:
                lines.append(known[5])
        return "\n".join(lines)

    async def _evalsha(self, keys: list[str], args: list[str]) -> list:
        try:
            return await self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # First call, or a restarted or new node: EVAL runs it and caches it there again.
            return await self.client.eval(SCRIPT, len(keys), *keys, *args)

    async def _without_redis(self, now: float, checks: Sequence[Check]) -> Verdict:
        self.stats.fallbacks += 1
        if self.fail == "open":
            return await self.fallback.apply(now, checks)
        return Verdict(0, max(1.0, self._retry_at - self.clock()))

    def _went_down(self, exc: BaseException) -> None:
        now = self.clock()
        if self._down_since is None:
            self._down_since = now
            self._backoff = self.backoff_min
            self.stats.outages += 1
            mode = (
                "counting locally (fail open)" if self.fail == "open" else "throttling counted requests (fail closed)"
            )
            log.warning("guard: Redis unavailable (%s: %s); %s", type(exc).__name__, exc, mode)
        else:
            self._backoff = min(self._backoff * 2, self.backoff_max)
        self._retry_at = now + self._backoff

    def _came_back(self) -> None:
        assert self._down_since is not None
        lasted = self.clock() - self._down_since
        self.stats.down_seconds += lasted
        self._down_since = None
        log.warning("guard: Redis is back after %.1f s; shared counting resumed", lasted)


# Eviction policies under which a flood cannot push out a live budget: none at all, or the
# keys nearest their end first (a new client's minute window before a day's budget).
SAFE_POLICIES = ("noeviction", "volatile-ttl")


async def eviction_problem(client: Redis | RedisCluster) -> str | None:
    """What is wrong with how Redis at ``client`` evicts keys, for guard's counters (None: nothing).

    Every guard key has a time to live, so every other ``maxmemory-policy`` (``allkeys-*``,
    ``volatile-lru``, ``volatile-lfu``, ``volatile-random``) picks budgets, strike counters and
    bans as readily as a flood's fresh keys: a scraper, or a botnet for it, could flush the
    counts that limit it. Without ``maxmemory`` nothing is evicted. Read from INFO (managed
    services often rename CONFIG).
    """
    info = await client.info("memory")
    nodes = [info] if "maxmemory_policy" in info else [v for v in info.values() if isinstance(v, dict)]
    for node in nodes:
        policy = str(node.get("maxmemory_policy", "noeviction"))
        if policy not in SAFE_POLICIES and int(node.get("maxmemory", 0) or 0) > 0:
            return (
                f"Redis evicts keys when full (maxmemory-policy {policy}, maxmemory {node['maxmemory']} bytes): "
                "a flood of new clients can push out live budgets, strike counters and bans. Set "
                "maxmemory-policy volatile-ttl (or noeviction, with room to spare); see docs/redis.md"
            )
    return None


def budget_slice_keys(key: str, limit: Budget, now_us: int) -> list[str]:
    """The Redis keys of a budget's slices in the window ending now (as apply.lua names them)."""
    current = now_us // limit.slice_us
    return [f"{key}:{s}" for s in range(current - SLICES + 1, current + 1)]


def budget_peek(check: Check, count: int, ban: bytes | None, now_us: int) -> dict[str, Any]:
    """A budget's state read from Redis (the count without the request's own track)."""
    assert isinstance(check.limit, Budget)
    state: dict[str, Any] = {
        "key": check.key,
        "kind": "budget",
        "count": count,
        "max": check.limit.max,
        "per": check.limit.per,
        "item": check.item,
        "would_deny": check.item is not None and count >= check.limit.max,
    }
    if ban and int(ban) > now_us:
        state["banned_for"] = round((int(ban) - now_us) / 1e6, 3)
        state["would_deny"] = True
    return state


def _check_lines(check: Check) -> tuple[str, str]:
    """A check's line for the script without its item, and its escalation line ("": none)."""
    limit, ban = check.limit, check.ban
    if isinstance(limit, Budget):
        head = f"h|{limit.max}|{limit.slice_us}"
    elif isinstance(limit, DistinctLimit):
        head = f"d|{limit.max}|{limit.per_us}"
    else:
        head = f"r|{limit.interval_us}|{limit.tolerance_us}"
    tail = f"{ban.after}|{ban.within_us}|{ban.duration_us}" if ban is not None else "0|0|0"
    escalation = _escalation_line(ban, check.escalation) if ban is not None and check.escalation is not None else ""
    return f"{head}|{tail}|{int(check.shadow)}|{check.key}|", escalation


def _escalation_line(ban: Ban, e: Escalation) -> str:
    """A check's ban scope for the script (its ``e|`` line), with the escalation constants."""
    subnet_us = round(ban.duration_us * SUBNET_SHARE)
    head = f"e|{e.scope}|{ESCALATE_UAS}|{ESCALATE_ADDRESSES}|{subnet_us}|{SEEN_FOR_US}|{SEEN_REFRESH_US}|{SEEN_MAX}"
    return f"{head}|{e.address_key}|{e.subnet_key}|{e.marker}|{e.seen_key}|{e.ua}|{e.since}"
