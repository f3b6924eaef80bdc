"""The trap: a canary fetch bans its client and is counted as evidence of a sweep."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry, Counter

from guard.canaries import decoy
from guard.canaries.ids import CanaryIds, canary_key, derive_ids, random_key, warn_random_key
from guard.canaries.settings import FINGERPRINT_RULE_ID, RULE_ID, CanarySettings
from guard.policy.limits import REFUSE_AT_ONCE, Ban, Check

if TYPE_CHECKING:
    from guard.policy.engine import Facts, Guard

log = logging.getLogger("guard")


class CanaryHit(NamedTuple):
    """One fetch of a canary: what the sweep detector and the logs read."""

    at: float
    track: str
    group: str
    client: str  # the address (or /64) that fetched it
    network: str  # its subnet
    session: str | None  # the signed session's id, if it carried one
    fingerprint: str | None  # the TLS fingerprint its edge proxy reported, if any
    category: str
    banned: bool  # False for a verified crawler (counted, never banned: its operator is told instead)


#: Called with every hit, on the request path: keep it quick (queue the work).
Listener = Callable[[CanaryHit], None]


def hit_counter(registry: CollectorRegistry | None) -> Counter:
    """``guard_canary_hits_total{group}``, in ``registry``."""
    return Counter(
        "guard_canary_hits", "Fetches of canary tracks (ids no person can reach)", ["group"], registry=registry
    )


class CanaryTrap:
    """Knows the canary ids, answers them with decoys, bans who fetches them."""

    def __init__(self, settings: CanarySettings, counter: Counter | None = None) -> None:
        """``counter``: where hits are counted (see :func:`hit_counter`; default: an unregistered one)."""
        self.settings = settings
        key = canary_key(settings.key_env, settings.fallback_env)
        #: No key was configured: the ids are this process's own (said when it starts serving).
        self.random_key = key is None
        key = key if key is not None else random_key()
        self.ids = CanaryIds(derive_ids(key, settings.count, settings.low, settings.high), settings.registered)
        self.listeners: list[Listener] = []
        self.hits = 0
        self._counter = counter if counter is not None else hit_counter(None)

    def warn_if_unshared(self) -> None:
        """Warn (once) that the ids are this process's own, when no key was configured."""
        if self.random_key:
            self.random_key = False
            warn_random_key(self.settings.key_env, self.settings.fallback_env)

    def is_canary(self, track: str | None) -> bool:
        """Whether ``track`` (a canonical track id) is a canary: one set lookup."""
        return track is not None and track in self.ids

    def links(self, n: int = 3) -> list[str]:
        """URLs of ``n`` canaries, on the paths robots.txt disallows."""
        templates = self.settings.links
        ids = self.ids.linked(n)
        return [templates[i % len(templates)].replace("{id}", track) for i, track in enumerate(ids)]

    def decoy(self, group: str, track: str) -> decoy.Decoy:
        """What the application would answer for ``track`` on a path of ``group``."""
        s = self.settings
        return decoy.for_group(group, s.audio, s.api, track, s.stream.replace("{id}", track))

    async def spring(self, guard: Guard, facts: Facts, fingerprint: str | None = None) -> CanaryHit:
        """Count the hit, ban the client (unless it is a verified crawler), tell the listeners."""
        track = facts.where.track or ""
        client = facts.client
        session = facts.session.id if facts.session is not None else None
        verified = bool(facts.identity.verified)
        hit = CanaryHit(
            guard.clock(),
            track,
            facts.where.group,
            client.key,
            client.subnet,
            session,
            fingerprint,
            facts.identity.category,
            not verified,
        )
        self.hits += 1
        self._counter.labels(facts.where.group).inc()
        if not verified:
            await self._ban(guard, facts)
        log.warning(
            "guard: canary %s fetched by %s (%s, session %s, fingerprint %s)%s",
            track,
            client.ip,
            facts.identity.category,
            session or "-",
            fingerprint or "-",
            "" if hit.banned else ": a verified crawler, not banned",
        )
        for listener in self.listeners:
            try:
                listener(hit)
            except Exception:  # a listener's bug must not turn a decoy into a 500
                log.exception("guard: canary listener failed")
        return hit

    async def _ban(self, guard: Guard, facts: Facts) -> None:
        """Ban through the canary rules' own keys, so that every later request's canary checks find
        it: the session (else the browser) and the rare fingerprint for ``ban_for``, the address for
        ``address_for``, the network for ``network_for``."""
        s = self.settings
        rules = tuple(r for r in guard.policy.rules if r.id in (RULE_ID, FINGERPRINT_RULE_ID))
        now = guard.clock()
        # The checks later requests make (the fingerprint's only for a client with a rare one),
        # refused at once here: each starts its ban after one strike. One store call each.
        for check in guard.checks(facts, guard.limits_for(rules, facts.client)):
            await guard.store.apply(now, [check._replace(limit=REFUSE_AT_ONCE, escalation=None)])
            e = check.escalation
            if e is not None:  # the session's: its address and network, which its ban scope looks up
                for key, seconds in ((e.address_key, s.address_for), (e.subnet_key, s.network_for)):
                    await guard.store.apply(now, [Check(key, REFUSE_AT_ONCE, None, Ban(1, 60.0, seconds))])
