"""Tuning Python's garbage collector for a process that serves the guard.

The guard keeps a large, long-lived state in the process (counters, prepared checks,
caches) and allocates a few small objects per request. With Python's default thresholds a
full collection runs every few seconds under load and walks every object the collector
watches: tens of milliseconds in which no request is served, the whole of the guard's
p99 (bench/throughput.py, README "Performance"). :func:`tune_gc` is what a service with
a big heap usually does: it freezes what start-up made (modules, the rules, the
catalogue: never garbage, never walked again) and makes full collections rare. Objects
freed by reference counting are freed as always; only cycles wait longer.

It changes the whole process, so the middleware does it only when asked
(``GuardMiddleware(tune_gc=True)``); ``guard demo`` and ``guard serve`` ask.
"""

from __future__ import annotations

import gc

#: (young, middle, full): a full collection after a thousand middle ones instead of ten.
THRESHOLD = (700, 10, 1000)


def tune_gc(threshold: tuple[int, int, int] = THRESHOLD) -> None:
    """Collect once, freeze everything alive (start-up's objects), then collect fully less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
