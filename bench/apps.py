"""The applications the throughput benchmark serves (uvicorn factories).

All serve the demo platform; they differ only in what stands in front of it. Settings
come from the environment: BENCH_REDIS_URL for the Redis-backed variants, BENCH_RULES for
the guard's rules file (the shipped rules with sessions on, see bench/browsers.py).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from guard.demo.app import create_app, platform


def _collector(app):
    """Every server the same garbage collector settings (BENCH_GC): ``tuned`` (what ``guard demo``
    and ``guard serve`` do, guard.ops.collector), ``default`` (Python's), or a threshold ``a,b,c``."""
    setting = os.environ.get("BENCH_GC") or "tuned"
    if setting == "tuned":
        from guard.ops.collector import tune_gc

        tune_gc()
    elif setting != "default":
        import gc

        gc.set_threshold(*(int(n) for n in setting.split(",")))
    return app


def bare() -> Starlette:
    """The demo platform with nothing in front."""
    return _collector(platform())


def guard_memory():
    """Guarded, embedded memory store. The load arrives through a proxy on loopback."""
    return _collector(create_app(os.environ.get("BENCH_RULES") or None, trusted_proxies=["127.0.0.1/32"]))


def guard_redis():
    """Guarded, Redis store. A patient timeout (1 s, not 50 ms): on a starved machine a pause of
    the process (a full garbage collection) would otherwise pass for a Redis outage, and the
    variant would measure its local fallback instead of Redis."""
    from guard.stores.redis import RedisStore

    store = RedisStore.from_url(os.environ["BENCH_REDIS_URL"], timeout=1.0)
    return _collector(create_app(os.environ.get("BENCH_RULES") or None, store=store, trusted_proxies=["127.0.0.1/32"]))


def _forwarded_for(request: Request) -> str:
    """slowapi's key: the client the trusted proxy names (as the guard counts it)."""
    return request.headers.get("x-forwarded-for") or (request.client.host if request.client else "-")


def _slowapi(storage_uri: str) -> Starlette:
    """The same platform behind slowapi (the limits library): one limit on every route, per client.

    Each route's endpoint carries slowapi's decorator (its ASGI middleware breaks streamed
    responses such as the audio, so the decorator is the way that serves every request).
    """
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded

    limiter = Limiter(key_func=_forwarded_for, storage_uri=storage_uri)
    routes = [
        Route(r.path, limiter.limit("1000000/minute")(r.endpoint), methods=list(r.methods or ()))
        for r in platform().routes
        if isinstance(r, Route)
    ]
    app = Starlette(routes=routes)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def slowapi_memory() -> Starlette:
    """slowapi with its in-process memory storage."""
    return _collector(_slowapi("memory://"))


def slowapi_redis() -> Starlette:
    """slowapi with Redis storage."""
    return _collector(_slowapi(os.environ["BENCH_REDIS_URL"]))
