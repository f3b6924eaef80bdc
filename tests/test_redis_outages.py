"""Redis trouble never takes the site down: fail open (or closed), back off, recover alone."""

from __future__ import annotations

import logging

from support import CHROME, FakeClock, Visitor, free_port, run

from guard.demo.app import create_app
from guard.stores.redis import RedisStore
from guard.testing import RedisServer


def guarded_with_redis(policy, url: str, clock: FakeClock, **store_options):
    store = RedisStore.from_url(url, timeout=0.2, clock=clock, **store_options)
    return create_app(policy, store=store, clock=clock), store


def test_killed_redis_fails_open_then_shared_counting_resumes(policy, caplog) -> None:
    server = RedisServer().start()
    clock = FakeClock()
    app, store = guarded_with_redis(policy, server.url, clock)
    listener = Visitor(app, "198.51.100.60", CHROME)
    caplog.set_level(logging.WARNING, logger="guard.redis")

    async def main() -> None:
        for track in range(1, 11):
            assert (await listener.get(f"/api/tracks/{track}")).status_code == 200
        assert store.stats.errors == 0

        server.kill()  # under traffic
        statuses = [(await listener.get(f"/api/tracks/{t}")).status_code for t in range(11, 31)]
        assert statuses == [200] * 20  # no 5xx, nothing refused: fail open
        assert store.is_down and store.stats.outages == 1
        # Locally the fallback store still counts: a scraper on this instance is stopped.
        scraper = Visitor(app, "192.0.2.200", CHROME)
        scraped = [(await scraper.get(f"/api/tracks/{t}")).status_code for t in range(1, 60)]
        assert scraped.count(200) == 40 and 429 in scraped

        server.start()  # same port
        clock.advance(1)  # past the first backoff step
        assert (await listener.get("/api/tracks/31")).status_code == 200
        assert not store.is_down
        # Shared counting resumed: Redis holds this client's window again.
        assert any(b"198.51.100.60" in k for k in server.client().keys("*"))
        await store.close()

    try:
        run(main())
    finally:
        server.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "guard.redis"]
    # Logged once per state change, not once per request.
    assert len(messages) == 2
    assert "unavailable" in messages[0] and "back after" in messages[1]


def test_redis_down_at_startup_does_not_stop_the_app(policy) -> None:
    clock = FakeClock()
    app, store = guarded_with_redis(policy, f"redis://127.0.0.1:{free_port()}/0", clock)

    async def main() -> None:
        assert (await Visitor(app, "198.51.100.61").get("/tracks/1/stream")).status_code == 200
        assert store.is_down and store.stats.fallbacks == 2  # the player's page, then its audio
        # While down, requests inside the backoff do not even try Redis.
        for _ in range(10):
            await Visitor(app, "198.51.100.61").get("/tracks/1")
        assert store.stats.calls == 1
        await store.close()

    run(main())


def test_fail_closed_throttles_counted_requests_but_not_the_directives(policy) -> None:
    clock = FakeClock()
    app, store = guarded_with_redis(policy, f"redis://127.0.0.1:{free_port()}/0", clock, fail="closed")

    async def main() -> None:
        visitor = Visitor(app, "198.51.100.62")
        r = await visitor.get("/api/tracks/1")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await visitor.get("/robots.txt")).status_code == 200
        assert (await visitor.get("/healthz")).status_code == 200
        await store.close()

    run(main())


def test_paused_redis_hits_the_timeout_and_fails_open(policy) -> None:
    server = RedisServer().start()
    clock = FakeClock()
    app, store = guarded_with_redis(policy, server.url, clock)

    async def main() -> None:
        visitor = Visitor(app, "198.51.100.63")
        assert (await visitor.get("/api/tracks/1")).status_code == 200
        server.pause()
        try:
            assert (await visitor.get("/api/tracks/2")).status_code == 200
            assert store.is_down and store.stats.errors == 1
        finally:
            server.resume()
        await store.close()

    try:
        run(main())
    finally:
        server.stop()
