"""Limit definitions (what to count) and the checks a request hands to a store.

Strategies live here as plain data; the stores (memory, Redis) implement the same
arithmetic, so both give the same verdict for the same traffic. All store arithmetic is
in whole microseconds (``*_us``): exact in Python ints and in Lua's doubles alike.

* ``RateLimit``: GCRA (generic cell rate algorithm). ``requests`` per ``per`` seconds
  sustained, with up to ``burst`` back to back. One timestamp per key, no fixed-window
  edges, and an exact Retry-After.
* ``DistinctLimit``: at most ``max`` distinct values (track ids) in any sliding window
  of ``per`` seconds. Each value is kept with the time it was last seen; a value
  already in the window is always allowed (a listener replaying a track).
* ``Budget``: at most ``max`` distinct values over an hour or a day (or longer): a
  sliding window of 24 slices, each a HyperLogLog (Redis PFADD/PFCOUNT; the memory store
  computes the same registers and estimate). A few kilobytes per key whatever the count,
  where a sorted set would hold every track. See :func:`distinct_limit`.
* ``Ban``: ``after`` denials within ``within`` seconds of the first one bans the key for
  ``duration`` seconds, in a scope (see :class:`Escalation` and docs/bans.md):

  - ``client`` (an address with one User-Agent): the ban also *holds* the address for
    the rule's paths: a User-Agent first seen on the address after the ban started
    inherits it, so a banned scraper gains nothing by switching; devices already seen
    there keep their own counters (a household or office NAT is not punished for one
    bad device). Bans under :data:`ESCALATE_UAS` User-Agents on one address ban the address.
  - ``address``: the whole address. :data:`ESCALATE_ADDRESSES` banned addresses in one
    subnet ban the subnet for a quarter of the ban's time (:data:`SUBNET_SHARE`).
  - ``subnet``: the whole subnet.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from guard.stores.hll import SLICES

#: What a distinct limit counts: tracks (the path's {track}), sessions (the ``session`` key
#: of the request: its signed session, else its address and User-Agent), User-Agents, or
#: networks (the /24 or /48 a session is bound to).
DISTINCT_VALUES = ("track", "session", "user_agent", "network")

#: What a limit counts by: ``ip`` (the client), ``ip_ua`` (the client with one User-Agent),
#: ``subnet`` (the client's first network level), ``session`` (the signed session, else as
#: ``ip_ua``), ``provider`` (everyone in one hosting provider's ranges), ``agent`` (everyone
#: sending one agent's name, across the platform: a catalogue agent, the name a self-declared
#: bot gives, else the User-Agent string), ``fingerprint`` (everyone with one rare TLS
#: fingerprint, whatever their address: guard.fingerprints) and network levels written
#: ``v4/16``, ``v6/48`` (see :func:`prefix_key`).
KEY_KINDS = ("ip", "ip_ua", "subnet", "session", "provider", "agent", "fingerprint")


@functools.cache
def prefix_key(key: str) -> tuple[int, int] | None:
    """``(IP version, prefix length)`` of a network-level key such as ``v4/16`` or ``v6/48``, else None."""
    family, _, bits = key.partition("/")
    version = {"v4": 4, "v6": 6}.get(family)
    if version is None or not bits.isdigit() or bits != str(int(bits)):
        return None
    prefix = int(bits)
    return (version, prefix) if 1 <= prefix <= (32 if version == 4 else 128) else None


def is_key_kind(key: object) -> bool:
    """Whether ``key`` is something a limit can count by."""
    return isinstance(key, str) and (key in KEY_KINDS or prefix_key(key) is not None)


def network_levels(keys: Iterable[str | None]) -> dict[int, tuple[int, ...]]:
    """The prefix lengths per IP version that ``keys`` count by (narrowest first)."""
    levels: dict[int, set[int]] = {4: set(), 6: set()}
    for key in keys:
        parsed = prefix_key(key) if key else None
        if parsed is not None:
            levels[parsed[0]].add(parsed[1])
    return {version: tuple(sorted(prefixes, reverse=True)) for version, prefixes in levels.items()}


#: The start of a session's own hash tag (``prefix{~s.<hash>}:``): a session's counters follow
#: it from network to network, so they are not under the client's network tag.
SESSION_TAG = "~s."


def under_session_tag(key: str) -> bool:
    """Whether ``key`` is under a session's own hash tag rather than a client's network tag."""
    start = key.find("{")
    return start >= 0 and key.startswith(SESSION_TAG, start + 1)


BAN_SCOPES = ("client", "address", "subnet")
#: A ban's scope when the rules name none: the scope of the key the limit counts (a ban on
#: any other key, a provider or a wider network level, covers that key alone).
DEFAULT_SCOPE = {"ip_ua": "client", "session": "client", "ip": "address", "subnet": "subnet"}
#: Client bans under this many User-Agents of one address (within one hold) ban the address.
ESCALATE_UAS = 2
#: This many addresses banned at once in one subnet (by one rule) ban the subnet...
ESCALATE_ADDRESSES = 3
#: ...for this share of the ban's duration.
SUBNET_SHARE = 0.25
#: How long an address remembers the User-Agents it has seen (their first sight), and how many.
SEEN_FOR_US = 86_400 * 1_000_000
SEEN_MAX = 256
#: The record's end is pushed back to SEEN_FOR_US when less than this is left (not on every request).
SEEN_REFRESH_US = 82_800 * 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """GCRA: ``requests`` per ``per`` seconds, ``burst`` at once."""

    requests: int
    per: float
    burst: int
    #: Microseconds between requests at the sustained rate (GCRA's emission interval).
    interval_us: int = field(init=False, repr=False, compare=False)
    #: How far ahead of now the theoretical arrival time may run (burst * interval).
    tolerance_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        interval = max(1, round(self.per * 1e6 / self.requests))
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "tolerance_us", interval * self.burst)


@dataclass(frozen=True, slots=True)
class DistinctLimit:
    """At most ``max`` distinct values of ``counts`` (the track) per sliding ``per`` seconds."""

    counts: str
    max: int
    per: float
    per_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_us", round(self.per * 1e6))


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max`` distinct values of ``counts`` per ``per`` seconds (an hour or more), estimated.

    The window slides in ``SLICES`` steps: the distinct values of the current slice and the
    23 before it are counted (HyperLogLog, about 0.8% standard error), and a value that
    would take the estimate past ``max`` is refused. A value already counted changes no
    register and is always allowed (a listener replaying a track, the next Range request).
    """

    counts: str
    max: int
    per: float
    slice_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slice_us", round(self.per * 1e6) // SLICES)


class BanLookup(DistinctLimit):
    """A check that counts nothing and only looks up its key's ban (and its ban scope's).

    The canary rule's check on every request: what bans a client there is a canary fetch
    (guard/canaries), never a count.
    """


#: A limit that refuses its first request: the canary trap's check, which starts a ban at once.
REFUSE_AT_ONCE = RateLimit(1, 60.0, 0)


#: Distinct-value limits over this many seconds or more are budgets (estimated, see Budget).
BUDGET_FROM = 3600.0


def distinct_limit(counts: str, max: int, per: float) -> DistinctLimit | Budget:
    """The limit for ``distinct: counts, max, per``: an exact window below an hour, a budget from one."""
    if per >= BUDGET_FROM:
        return Budget(counts, max, per)
    return DistinctLimit(counts, max, per)


@dataclass(frozen=True, slots=True)
class Ban:
    """Escalation: ``after`` denials within ``within`` seconds bans for ``duration``."""

    after: int
    within: float
    duration: float
    scope: str | None = None  # client | address | subnet; None: DEFAULT_SCOPE of the limit's key
    within_us: int = field(init=False, repr=False, compare=False)
    duration_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "within_us", round(self.within * 1e6))
        object.__setattr__(self, "duration_us", round(self.duration * 1e6))


class Escalation(NamedTuple):
    """Where a check's ban reaches beyond its own key (the same for every store).

    ``address_key`` and ``subnet_key`` are the rule's keys for the client's whole address
    and subnet (bans at ``+ ":b"``; the address's hold at ``address_key + ":h"``, the
    subnet's banned addresses at ``subnet_key + ":e"``). For the ``client`` scope,
    ``seen_key`` is the address's record of the devices it has seen and ``ua`` this
    request's device: its session, else its User-Agent hash. ``since`` is when that session
    was issued (µs; 0 without one): a session issued before a hold started counts as seen
    there, though its first request with it (the page that minted it) was recorded under
    its User-Agent. ``marker`` (one per hash tag) holds the latest end of any
    hold, address or subnet ban under the tag: while it has passed, a request looks no
    further, so the common case costs one read.
    """

    scope: str
    address_key: str
    subnet_key: str
    seen_key: str = ""
    ua: str = ""
    marker: str = ""
    since: int = 0


class Check(NamedTuple):
    """One counter a request must pass, as handed to a store.

    ``key`` is the full storage key; the ban and strike counters live at ``key + ":b"``
    and ``key + ":s"``. ``item`` is the value a DistinctLimit counts (None: not counted).
    """

    key: str
    limit: RateLimit | DistinctLimit | Budget
    item: str | None = None
    ban: Ban | None = None
    shadow: bool = False  # exceeding it is reported in Verdict.shadowed, never denies
    escalation: Escalation | None = None  # with a ban: its scope beyond ``key``

    @property
    def ban_key(self) -> str:
        return self.key + ":b"

    @property
    def strike_key(self) -> str:
        return self.key + ":s"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A store's answer: which check denied the request (None: allowed) and for how long.

    ``banned_until`` is set when the denial is (or started) a ban.
    """

    denied: int | None = None
    retry_after: float = 0.0
    banned_until: float | None = None
    shadowed: tuple[int, ...] = ()  # shadow checks that would have denied

    @classmethod
    def from_us(
        cls, index: int | None, retry_us: int, banned_until_us: int | None = None, shadowed: tuple[int, ...] = ()
    ) -> Verdict:
        until = banned_until_us / 1e6 if banned_until_us else None
        return cls(index, retry_us / 1e6, until, shadowed)


ALLOWED = Verdict()


def to_us(seconds: float) -> int:
    """Seconds since the epoch as whole microseconds (what stores compute with)."""
    return round(seconds * 1e6)
