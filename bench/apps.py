"""The applications the throughput benchmark serves (uvicorn factories).

All serve the demo platform; they differ only in what stands in front of it. Settings
come from the environment: BENCH_REDIS_URL for the Redis-backed variants.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from guard.demo.app import create_app, platform, track


def bare() -> Starlette:
    """The demo platform with nothing in front."""
    return platform()


def guard_memory():
    """Guarded, embedded memory store. The load arrives through a proxy on loopback."""
    return create_app(trusted_proxies=["127.0.0.1/32"])


def guard_redis():
    """Guarded, Redis store."""
    from guard.stores.redis import RedisStore

    store = RedisStore.from_url(os.environ["BENCH_REDIS_URL"])
    return create_app(store=store, trusted_proxies=["127.0.0.1/32"])


def slowapi_redis() -> Starlette:
    """The same JSON endpoint behind slowapi (limits library) with Redis storage."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri=os.environ["BENCH_REDIS_URL"])

    @limiter.limit("1000000/minute")
    async def track_api(request: Request) -> JSONResponse:
        return JSONResponse(track(int(request.path_params["track_id"])))

    app = Starlette(routes=[Route("/api/tracks/{track_id}", track_api)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    return app
