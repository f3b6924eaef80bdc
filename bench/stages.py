"""Where a checked request's time goes in the guard, stage by stage (in process).

Usage: python bench/stages.py [--requests 40000] [--clients 2000] [--redis] [--save | --out FILE]

Browser-like listeners (bench/browsers.py: the shipped rules with sessions on, each
listener its own /24 behind a trusted proxy, its session cookie kept) make the requests a
listener's browser makes, round after round: the track page (a navigation), its JSON
(``/api/tracks/N``) and two Range requests of its audio; every fourth request moves to a new
track (a new track a minute per listener, within every limit: all requests are allowed).
They go through the whole middleware, in front of a minimal ASGI app (one ``send`` of a
response start and body), so what is measured is the guard.

Two passes over the same workload:

1. uninstrumented: microseconds per request added by the guard (the middleware's time
   minus the bare app's), per kind of request;
2. instrumented: each stage's own time (time.perf_counter_ns around it, its sub-stages
   subtracted), per kind of request. The wrappers cost a little themselves (about 0.1 us
   each): stages sum to a bit more than pass 1.

Stages: client resolution (``ClientResolver.resolve``), signature (Web Bot Auth check),
session read (cookie, token check, binding), identification (User-Agent), facts (path
normalising, group and track), plan (``Policy.plan``), decide (the engine's own steps),
checks (building the store checks), store (``store.apply``), observe (metrics, decision
log, ``guard top``), session cookie (``Sessions.respond``), respond and rest (the
middleware around them, headers added to the response).

``--merge a.json b.json ...`` writes the median of several runs, figure by figure (the
machine may be shared: runs of two versions interleaved, then merged, compare fairly).

With ``--redis`` the store is Redis (redis-server on a free loopback port), requests one
at a time: the store stage is then the round trip's wall time, and ``store_cpu_us`` is
this process's CPU in it (the event-loop time a request costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import saving  # bench/saving.py: --save and --out

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from browsers import BENCH_SESSION_KEY, FETCH, MEDIA, NAVIGATE, harvest_cookies, proxied, rules_file  # noqa: E402

STAGES = (
    "client resolution",
    "signature",
    "session read",
    "identification",
    "facts",
    "plan",
    "decide",
    "checks",
    "store",
    "observe",
    "session cookie",
    "respond and rest",
)
KINDS = ("page", "api", "audio")


class Clock:
    """The guard's clock: advances with the requests (each listener makes one every 15 s)."""

    def __init__(self, step: float) -> None:
        self.now = 1_800_000_000.0
        self.step = step

    def __call__(self) -> float:
        return self.now


class Stages:
    """Exclusive time per stage: each wrapper adds its elapsed time minus its sub-stages'."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.cpu_ns = 0
        self.stack: list[int] = []

    def wrap(self, name: str, fn, cpu: bool = False):
        stack, ns, clock = self.stack, self.ns, time.perf_counter_ns

        def timed(*args, **kwargs):
            stack.append(0)
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - started
                ns[name] += elapsed - stack.pop()
                if stack:
                    stack[-1] += elapsed

        async def timed_async(*args, **kwargs):
            stack.append(0)
            started = clock()
            cpu_started = time.process_time_ns() if cpu else 0
            try:
                return await fn(*args, **kwargs)
            finally:
                elapsed = clock() - started
                if cpu:
                    self.cpu_ns += time.process_time_ns() - cpu_started
                ns[name] += elapsed - stack.pop()
                if stack:
                    stack[-1] += elapsed

        return timed_async if asyncio.iscoroutinefunction(fn) else timed


async def minimal_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def build(rules: Path, clock: Clock, redis_url: str | None):
    from guard.middleware import GuardMiddleware

    store = None
    if redis_url:
        from guard.stores.redis import RedisStore

        store = RedisStore.from_url(redis_url, timeout=2.0)
    return GuardMiddleware(
        minimal_app, rules, store=store, trusted_proxies=["127.0.0.1/32"], clock=clock, reload_interval=0
    )


def instrument(mw, stages: Stages, redis: bool) -> None:
    import guard.middleware as middleware

    guard = mw.guard
    guard.resolver.resolve = stages.wrap("client resolution", guard.resolver.resolve)
    middleware.check_signature = stages.wrap("signature", middleware.check_signature)
    mw.sessions.read = stages.wrap("session read", mw.sessions.read)
    guard.identifier.identify = stages.wrap("identification", guard.identifier.identify)
    guard.facts = stages.wrap("facts", guard.facts)
    guard.policy.plan = stages.wrap("plan", guard.policy.plan)
    guard.decide = stages.wrap("decide", guard.decide)
    for name in ("limits_for", "checks", "_checks", "mint_checks"):
        setattr(guard, name, stages.wrap("checks", getattr(guard, name)))
    guard.store.apply = stages.wrap("store", guard.store.apply, cpu=redis)
    mw.observer.record = stages.wrap("observe", mw.observer.record)
    if mw.top is not None:
        mw.top.add = stages.wrap("observe", mw.top.add)
    mw.sessions.respond = stages.wrap("session cookie", mw.sessions.respond)


def workload(n: int, clients: int, cookies: list[bytes]):
    """(kind, scope) of request ``i``: listener i % clients, its round i // clients."""
    for i in range(n):
        c, r = i % clients, i // clients
        track = (c * 50 + r // 4) % 100000 + 1  # a new track every fourth request (a minute apart)
        cookie = cookies[c]
        step = r % 4
        if step == 0:
            yield "page", proxied(f"/tracks/{track}", c, NAVIGATE, cookie)
        elif step == 1:
            yield "api", proxied(f"/api/tracks/{track}", c, FETCH, cookie)
        else:
            yield "audio", proxied(f"/tracks/{track}/stream", c, MEDIA, cookie)


async def run(mw, clock: Clock, n: int, clients: int, cookies: list[bytes], stages: Stages | None):
    """Per kind: requests and nanoseconds in the middleware (stages: per-stage nanoseconds)."""
    from browsers import call

    count: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    per_kind: dict[str, dict[str, int]] = {k: defaultdict(int) for k in KINDS}
    statuses: dict[int, int] = defaultdict(int)
    for kind, scope in workload(n, clients, cookies):
        before = dict(stages.ns) if stages is not None else None
        started = time.perf_counter_ns()
        status, _ = await call(mw, scope)
        total[kind] += time.perf_counter_ns() - started
        count[kind] += 1
        statuses[status] += 1
        clock.now += clock.step
        if stages is not None and before is not None:
            for name, value in stages.ns.items():
                per_kind[kind][name] += value - before.get(name, 0)
    return count, total, per_kind, dict(statuses)


async def bare_ns(n: int, clients: int, cookies: list[bytes]) -> float:
    from browsers import call

    spent = 0
    for _, scope in workload(n, clients, cookies):
        started = time.perf_counter_ns()
        await call(minimal_app, scope)
        spent += time.perf_counter_ns() - started
    return spent / n


async def measure(args, redis_url: str | None) -> dict:
    os.environ["GUARD_SESSION_KEY"] = BENCH_SESSION_KEY
    rules = rules_file()
    step = 15.0 / args.clients  # each listener: a request every 15 s
    results: dict = {}
    bare = await bare_ns(min(args.requests, 20000), args.clients, [b"guard_session=x"] * args.clients)
    results["bare_app_us"] = round(bare / 1000, 2)
    for instrumented in (False, True):
        clock = Clock(step)
        mw = build(rules, clock, redis_url)
        if redis_url:
            await mw.guard.store.client.flushall()
        mint_started = time.perf_counter_ns()
        cookies = await harvest_cookies(mw, args.clients)
        mint_us = (time.perf_counter_ns() - mint_started) / args.clients / 1000 - bare / 1000
        stages = Stages() if instrumented else None
        if stages is not None:
            instrument(mw, stages, redis_url is not None)
        count, total, per_kind, statuses = await run(mw, clock, args.requests, args.clients, cookies, stages)
        if mw.guard.store is not None and hasattr(mw.guard.store, "close") and redis_url:
            await mw.guard.store.close()
        n = sum(count.values())
        if not instrumented:
            results["statuses"] = statuses
            results["page_minting_a_session_us"] = round(mint_us, 1)
            results["guard_us"] = {
                "all": round(sum(total.values()) / n / 1000 - bare / 1000, 1),
                **{k: round(total[k] / count[k] / 1000 - bare / 1000, 1) for k in KINDS},
            }
        else:
            assert stages is not None
            table: dict[str, dict[str, float]] = {}
            for kind in ("all", *KINDS):
                kinds = KINDS if kind == "all" else (kind,)
                requests = sum(count[k] for k in kinds)
                spent = {s: sum(per_kind[k].get(s, 0) for k in kinds) for s in STAGES if s != "respond and rest"}
                rest = sum(total[k] for k in kinds) - sum(spent.values()) - bare * requests
                spent["respond and rest"] = rest
                table[kind] = {s: round(spent[s] / requests / 1000, 2) for s in STAGES}
                table[kind]["sum"] = round(sum(spent.values()) / requests / 1000, 1)
            results["stages_us"] = table
            if redis_url:
                results["store_cpu_us"] = round(stages.cpu_ns / n / 1000, 1)
    return results


def merge(paths: list[str]) -> dict:
    """The median of several runs' reports, figure by figure (the runs are kept under ``runs``)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]

    def median(values: list) -> object:
        if all(isinstance(v, dict) for v in values):
            return {k: median([v[k] for v in values if k in v]) for k in values[0]}
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return round(statistics.median(values), 2)
        return values[0]

    merged = {k: median([r[k] for r in runs if k in r]) for k in runs[0]}
    merged["label"] = runs[0].get("label", "")
    merged["note"] = f"median of {len(runs)} runs, figure by figure"
    merged["load_average"] = [r.get("load_average") for r in runs]
    merged["runs"] = runs
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge", nargs="+", metavar="REPORT", help="write the median of these reports")
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--redis", action="store_true", help="also profile on Redis (redis-server on a free port)")
    saving.add_options(parser, "stages")
    parser.add_argument("--label", default="", help="what this run measures (e.g. before, after)")
    args = parser.parse_args()
    if args.merge:
        saving.save(args, merge(args.merge))
        return
    report: dict = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
        "workload": f"{args.requests} requests from {args.clients} browser-like listeners (page, API, 2 audio "
        "Range requests per track; session cookie kept), shipped rules with sessions on, in process",
    }
    report["memory"] = asyncio.run(measure(args, None))
    if args.redis:
        from guard.testing import RedisServer

        server = RedisServer().start()
        try:
            report["redis"] = asyncio.run(measure(argparse.Namespace(**{**vars(args), "requests": 8000}), server.url))
        finally:
            server.stop()
    saving.save(args, report)
    for store in ("memory", "redis"):
        if store not in report:
            continue
        r = report[store]
        print(f"{store}: guard us per request {r['guard_us']}; statuses {r['statuses']}")
        print(f"  {'stage':20}" + "".join(f"{k:>9}" for k in ("all", *KINDS)))
        for s in (*STAGES, "sum"):
            print(f"  {s:20}" + "".join(f"{r['stages_us'][k][s]:9.2f}" for k in ("all", *KINDS)))


if __name__ == "__main__":
    main()
