"""The ASGI middleware: pass-through of what it allows, the directives, client identity."""

from __future__ import annotations

from typing import Any

from support import GPTBOT, RULES, FakeClock, Visitor, run

from guard.demo.app import audio_bytes, audio_size, create_app
from guard.middleware import GuardMiddleware


def test_allowed_audio_is_untouched_including_range(guarded) -> None:
    listener = guarded()

    async def main() -> None:
        full = await listener.get("/tracks/7/stream")
        assert full.status_code == 200
        assert full.content == b"".join(audio_bytes(7, 0, audio_size(7) - 1))
        part = await listener.get("/tracks/7/stream", headers={"range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 1000-1999/{audio_size(7)}"
        assert part.content == full.content[1000:2000]
        tail = await listener.get("/tracks/7/stream", headers={"range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == full.content[-10:]

    run(main())


def test_blocked_crawler_gets_403_naming_the_rule_and_head_gets_no_body(guarded) -> None:
    bot = guarded(user_agent=GPTBOT)

    async def main() -> None:
        r = await bot.get("/tracks/1/stream")
        assert r.status_code == 403
        assert "guard rule 'ai-training'" in r.text
        assert r.headers["content-type"].startswith("text/plain")
        head = await bot.get("/tracks/1/stream", method="HEAD")
        assert head.status_code == 403 and head.content == b""

    run(main())


def test_directives_are_served_to_everyone_and_never_counted(guarded, clock) -> None:
    bot = guarded(user_agent=GPTBOT)

    async def main() -> None:
        for _ in range(2000):  # far past any rate limit
            r = await bot.get("/robots.txt")
            assert r.status_code == 200
        assert "User-agent: GPTBot" in r.text
        ai = await bot.get("/ai.txt")
        assert ai.status_code == 200 and "Disallow: /" in ai.text
        assert (await guarded(user_agent=None).get("/healthz")).status_code == 200

    run(main())


def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guard = GuardMiddleware(app, RULES)

    async def main() -> None:
        async def receive() -> dict:
            return {}

        async def send(message: dict) -> None:
            raise AssertionError("the guard must not answer non-HTTP scopes")

        await guard({"type": "lifespan"}, receive, send)
        await guard(
            {
                "type": "websocket",
                "path": "/tracks/1/stream",
                "headers": [(b"user-agent", GPTBOT.encode())],
                "client": ("198.51.100.1", 1),
            },
            receive,
            send,
        )

    run(main())
    assert seen == ["lifespan", "websocket"]


def test_missing_user_agent_is_suspicious_on_content_not_a_crash(guarded) -> None:
    anonymous = guarded(user_agent=None)

    async def main() -> None:
        assert (await anonymous.get("/tracks/3")).status_code == 200
        r = await anonymous.get("/tracks/3/stream")
        assert r.status_code == 403 and "no-user-agent" in r.text

    run(main())


def test_forwarded_headers_only_count_from_a_trusted_proxy(policy) -> None:
    clock = FakeClock()
    direct = create_app(policy, clock=clock)
    proxied = create_app(policy, clock=clock, trusted_proxies=["10.0.0.0/8"])

    async def walk(visitor: Visitor, forwarded_for) -> int:
        got = 0
        for track in range(1, 61):
            headers = {"x-forwarded-for": forwarded_for(track)}
            if (await visitor.get(f"/api/tracks/{track}", headers=headers)).status_code == 200:
                got += 1
        return got

    # From an untrusted peer, a forged X-Forwarded-For changes nothing: one client, stopped at 40.
    assert run(walk(Visitor(direct, "198.51.100.9"), lambda t: f"203.0.113.{t}")) == 40
    # Through a trusted proxy, the right-most untrusted address is the client: 60 different people.
    assert run(walk(Visitor(proxied, "10.1.2.3"), lambda t: f"1.2.3.4, 203.0.113.{t}, 10.9.9.9")) == 60
    # A chain whose client entry is malformed goes to one shared bucket (one client again).
    assert run(walk(Visitor(proxied, "10.1.2.4"), lambda t: f"203.0.113.{t}, not-an-ip")) == 40


def test_odd_headers_never_raise_into_the_app(guarded) -> None:
    visitor = guarded()

    async def main() -> None:
        huge = "Mozilla/5.0 " + "x" * 65536  # padded: judged a bot, not an error
        assert (await visitor.get("/tracks/1", headers={"user-agent": huge})).status_code == 403
        for headers in (
            {"user-agent": b"\xff\xfeMozilla/5.0 \xc3\x28 Chrome\x00"},  # not UTF-8
            {"x-forwarded-for": "," * 5000},
            {"x-forwarded-for": "[::1"},
        ):
            r = await visitor.get("/tracks/1", headers=headers)
            assert r.status_code == 200

    run(main())


def test_mounting_as_the_readme_shows() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request):
        return PlainTextResponse("hello")

    added = Starlette(routes=[Route("/", home)])
    added.add_middleware(GuardMiddleware, rules=str(RULES), trusted_proxies=["10.0.0.0/8"])
    listed = Starlette(routes=[Route("/", home)], middleware=[Middleware(GuardMiddleware, rules=str(RULES))])
    wrapped = GuardMiddleware(Starlette(routes=[Route("/", home)]), rules=str(RULES))
    for app in (added, listed, wrapped):
        assert run(Visitor(app, "198.51.100.90", GPTBOT).get("/")).status_code == 403
        browser = run(Visitor(app, "198.51.100.91").get("/"))
        assert browser.status_code == 200 and browser.text == "hello"
        assert "User-agent: GPTBot" in run(Visitor(app, "198.51.100.92").get("/robots.txt")).text


def test_the_garbage_collector_is_tuned_only_when_asked_and_once(monkeypatch) -> None:
    import gc

    import guard.middleware
    from guard.ops.collector import THRESHOLD, tune_gc

    calls: list[bool] = []
    monkeypatch.setattr(guard.middleware, "tune_gc", lambda: calls.append(True))
    for asked in (False, True):
        app = create_app(RULES, tune_gc=asked, reload_interval=0)
        visitor = Visitor(app, "198.51.100.7")
        run(visitor.get("/"))
        run(visitor.get("/"))
    assert calls == [True]
    # What it does (the thresholds are put back for the rest of the tests).
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == THRESHOLD and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
