"""What ops see: Prometheus metrics and one JSON line per decision worth reading.

Metrics (prometheus-client, in the middleware's own registry unless one is given):

* ``guard_decisions_total{action, category, rule, shadow}``: every decision; ``shadow``
  is ``"true"`` for what a shadow rule (or a policy in shadow mode) would have done.
* ``guard_check_seconds``: histogram of the guard's own time per checked request.
* ``guard_store_calls_total``, ``guard_store_errors_total``, ``guard_store_fallbacks_total``,
  ``guard_store_outages_total``, ``guard_store_down`` and ``guard_store_down_seconds_total``:
  the Redis store's health (fail-open time included), read at scrape time.

Decision log: logger ``guard.decisions``, one JSON object per line for every block,
throttle and shadow decision, and for a sample of allows (``log.sample_allows``). The
fields are documented in README.md ("Decision log").
"""

from __future__ import annotations

import json
import logging
import random
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from guard.policy.engine import Decision, Facts

decision_log = logging.getLogger("guard.decisions")

LATENCY_BUCKETS = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 0.02, 0.1)
DECISION_LABELS = ("action", "category", "rule", "shadow")


class StoreCollector(Collector):
    """Reads a store's ``stats`` (the Redis store keeps them) when Prometheus scrapes."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        stats = getattr(self.store, "stats", None)
        if stats is None:
            return
        for name, help_text in (
            ("calls", "Redis calls (each carries a batch of requests)"),
            ("errors", "Redis calls that failed or timed out"),
            ("fallbacks", "requests decided without Redis (fail open: local counting; fail closed: 429)"),
            ("outages", "times Redis went from up to down"),
        ):
            yield CounterMetricFamily(f"guard_store_{name}", help_text, value=getattr(stats, name))
        down_for = self.store.down_for()
        yield GaugeMetricFamily("guard_store_down", "1 while Redis is unavailable", value=float(self.store.is_down))
        yield CounterMetricFamily(
            "guard_store_down_seconds", "time spent without Redis", value=stats.down_seconds + down_for
        )


class Observer:
    """Counts and logs decisions.

    The request path only adds to plain numbers (a decision's count, the latency's bucket
    and sum); :class:`DecisionCollector` turns them into ``guard_decisions_total`` and
    ``guard_check_seconds`` when Prometheus scrapes, as prometheus-client's own Counter
    and Histogram would, without their locks and checks on every request.
    """

    def __init__(self, registry: CollectorRegistry | None = None, sample_allows: float = 0.0) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sample_allows = sample_allows
        #: Decisions per (action, category, rule, shadow), and when each label set was first counted.
        self.counts: dict[tuple[str, str, str, str], int] = {}
        self.created: dict[tuple[str, str, str, str], float] = {}
        #: Checked requests per latency bucket (the last: above every bound), their total seconds.
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.since = time.time()
        self.registry.register(DecisionCollector(self))
        self._store_collector: StoreCollector | None = None

    def watch_store(self, store: Any) -> None:
        """Export ``store``'s health (replacing the store watched before)."""
        if self._store_collector is not None:
            self.registry.unregister(self._store_collector)
        self._store_collector = StoreCollector(store)
        self.registry.register(self._store_collector)

    def record(self, facts: Facts, decision: Decision, seconds: float, *, shadow: bool = False) -> None:
        """Count one decision (and the shadow rules it noted), and log what deserves a line."""
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: a value on a bound is in its bucket
        self.seconds += seconds
        category = facts.identity.category
        rule = decision.rule
        key = (decision.action, category, rule.id if rule is not None else "-", "true" if shadow else "false")
        count = self.counts.get(key)
        if count is None:  # a new label set (rare): counted the long way, with its creation time
            self._count(key)
        else:
            self.counts[key] = count + 1
        for shadowed, _ in decision.shadowed:
            self._count((shadowed.action, category, shadowed.id, "true"))
        worth_a_line = shadow or decision.action != "allow" or decision.shadowed
        if worth_a_line or (self.sample_allows and random.random() < self.sample_allows):
            decision_log.info(json.dumps(log_record(facts, decision, shadow), separators=(",", ":")))

    def _count(self, key: tuple[str, str, str, str]) -> None:
        counts = self.counts
        count = counts.get(key)
        if count is None:
            self.created[key] = time.time()
            count = 0
        counts[key] = count + 1


class DecisionCollector(Collector):
    """``guard_decisions_total`` and ``guard_check_seconds`` from an :class:`Observer`'s numbers."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Any]:
        o = self.observer
        counts, created = dict(o.counts), dict(o.created)  # copies: requests may go on meanwhile
        decisions = CounterMetricFamily("guard_decisions", "guard decisions", labels=DECISION_LABELS)
        for key in counts:
            decisions.add_metric(key, counts[key], created=created.get(key))
        yield decisions
        buckets, total, cumulative = list(o.buckets), o.seconds, 0
        pairs = []
        for bound, count in zip((*map(floatToGoString, LATENCY_BUCKETS), "+Inf"), buckets, strict=True):
            cumulative += count
            pairs.append((bound, cumulative))
        latency = HistogramMetricFamily(
            "guard_check_seconds", "time the guard spends per checked request", buckets=pairs, sum_value=total
        )
        latency.samples.append(Sample("guard_check_seconds_created", {}, o.since, None))
        yield latency


def log_record(facts: Facts, decision: Decision, shadow: bool = False) -> dict[str, Any]:
    """The JSON decision-log fields for one request (see README.md, "Decision log")."""
    identity = facts.identity
    return {
        "ts": round(time.time(), 3),
        "action": decision.action,
        "enforced": not shadow,
        "rule": decision.rule_id,
        "reason": decision.reason or None,
        "retry_after": int(decision.retry_after_header) if decision.retry_after_header else None,
        "shadow_rules": [rule.id for rule, _ in decision.shadowed] or None,
        "ban_scope": decision.ban_scope,
        "client": facts.client.ip,
        "client_key": facts.client.key,
        "client_from": facts.client.source or "peer",
        "subnet": facts.client.subnet,
        "category": identity.category,
        "agent": identity.agent.name if identity.agent else None,
        "claimed": identity.claimed,
        "verified": identity.verified,
        "evidence": identity.evidence,
        "ua_hash": identity.ua_hash,
        "path": facts.path,
        "group": facts.where.group,
        "track": facts.where.track,
        "track_raw": facts.where.raw if facts.where.raw != facts.where.track else None,
    }
