"""Bulk fetching behind a browser User-Agent is stopped; listeners never are.

All through HTTP into the guarded demo, on the memory store, with an injected clock.
"""

from __future__ import annotations

from support import browser_user_agents, run


def test_bulk_fetcher_with_a_browser_ua_is_stopped_before_its_100th_track(guarded, clock) -> None:
    scraper = guarded("198.51.100.20")

    async def main() -> tuple[int, int]:
        obtained = 0
        denied = 0
        # It loads a page first, as a browser does, so its session is a listener's: the
        # limits on what it does next are what stop it.
        assert (await scraper.get("/tracks/1")).status_code == 200
        for track in range(1, 401):  # 400 distinct tracks in 60 seconds
            r = await scraper.get(f"/api/tracks/{track}")
            audio = await scraper.get(f"/tracks/{track}/stream")
            if r.status_code == 200 and audio.status_code == 200:
                obtained += 1
            else:
                denied += 1
                assert r.status_code in (403, 429) or audio.status_code in (403, 429)
            clock.advance(0.15)
        return obtained, denied

    obtained, denied = run(main())
    assert obtained < 100
    assert denied > 300


def test_stopped_scraper_is_throttled_with_retry_after_then_banned(guarded, clock) -> None:
    scraper = guarded("198.51.100.21")

    async def main() -> list:
        responses = []
        for track in range(1, 120):
            responses.append(await scraper.get(f"/api/tracks/{track}"))
            clock.advance(0.2)
        return responses

    responses = run(main())
    first_denied = next(r for r in responses if r.status_code != 200)
    assert first_denied.status_code == 429
    assert int(first_denied.headers["retry-after"]) >= 1
    assert "track-sprint" in first_denied.text
    assert responses[-1].status_code == 403  # kept hammering: banned
    assert "banned" in responses[-1].text


async def listen(visitor, clock, tracks: list[int], seconds_per_track: float) -> list[int]:
    """A listener's session: home page, track page, metadata, a few Range requests per track."""
    statuses = []
    for n, track in enumerate(tracks):
        if n % 5 == 0:
            statuses.append((await visitor.get("/")).status_code)
        statuses.append((await visitor.get(f"/tracks/{track}")).status_code)
        statuses.append((await visitor.get(f"/api/tracks/{track}")).status_code)
        for start in (0, 65536, 131072, 196608):
            r = await visitor.get(f"/tracks/{track}/stream", headers={"range": f"bytes={start}-{start + 65535}"})
            statuses.append(r.status_code)
        clock.advance(seconds_per_track)
    return statuses


def test_listener_is_never_stopped(guarded, clock) -> None:
    listener = guarded("198.51.100.30")
    # An hour: 30 tracks per 10 minutes, some replayed, some skipped quickly.
    tracks = [(n * 7) % 90 + 1 for n in range(180)]

    statuses = run(listen(listener, clock, tracks, seconds_per_track=20))
    assert set(statuses) <= {200, 206}, sorted(set(statuses))


def test_twenty_listeners_behind_one_nat_are_not_stopped(guarded, clock) -> None:
    uas = browser_user_agents()
    listeners = [guarded("192.0.2.50", uas[i * 3]) for i in range(20)]

    async def main() -> set[int]:
        statuses: set[int] = set()
        # Half an hour; each listener plays 30 distinct tracks per 10 minutes, all interleaved.
        for minute_slot in range(90):
            for i, listener in enumerate(listeners):
                track = 1000 * (i + 1) + minute_slot
                statuses.update(await listen(listener, clock, [track], seconds_per_track=0))
            clock.advance(20)
        return statuses

    assert run(main()) <= {200, 206}


def test_ua_rotation_on_one_address_does_not_escape_the_address_counters(guarded, clock) -> None:
    uas = browser_user_agents()

    async def main() -> int:
        obtained = 0
        for track in range(1, 1001):
            visitor = guarded("198.51.100.40", uas[track % len(uas)])  # new UA each track
            if (await visitor.get(f"/api/tracks/{track}")).status_code == 200:
                obtained += 1
            clock.advance(0.05)
        return obtained

    assert run(main()) <= 300


def test_rotating_addresses_in_one_subnet_are_counted_together(guarded, clock) -> None:
    async def main() -> int:
        obtained = 0
        for track in range(1, 2001):
            visitor = guarded(f"203.0.113.{track % 250 + 1}")  # a new address every request
            if (await visitor.get(f"/api/tracks/{track}")).status_code == 200:
                obtained += 1
            clock.advance(0.05)
        return obtained

    assert run(main()) <= 1000


def test_counters_forget_after_the_window(guarded, clock) -> None:
    visitor = guarded("198.51.100.50")

    async def main() -> tuple[int, int]:
        for track in range(1, 41):
            assert (await visitor.get(f"/api/tracks/{track}")).status_code == 200
        blocked = (await visitor.get("/api/tracks/41")).status_code
        clock.advance(61)
        return blocked, (await visitor.get("/api/tracks/41")).status_code

    assert run(main()) == (429, 200)
