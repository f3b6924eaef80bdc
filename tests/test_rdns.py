"""Forward-confirmed reverse DNS: in the background, cached, never on the request path."""

from __future__ import annotations

import asyncio
import dataclasses

from support import FakeClock, FakeResolver, Visitor, run

from guard.demo.app import create_app
from guard.identity.rdns import ReverseDNSVerifier

YANDEX = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"
IP = "5.255.253.10"


def app_with(policy, resolver, **rdns_options):
    rdns = ReverseDNSVerifier(resolver, **rdns_options)
    return create_app(policy, clock=FakeClock(), reverse_dns=rdns), rdns


async def settle(rdns: ReverseDNSVerifier) -> None:
    while rdns._pending:
        await asyncio.sleep(0)  # let the background check run (no wall-clock wait)


def test_confirmed_crawler_is_verified_after_the_background_check(policy) -> None:
    resolver = FakeResolver({IP: "5-255-253-10.spider.yandex.com."}, {"5-255-253-10.spider.yandex.com": [IP]})
    app, rdns = app_with(policy, resolver)
    bot = Visitor(app, IP, YANDEX)

    async def main() -> None:
        first = await bot.get("/tracks/1")  # pending: asked to come back shortly
        assert first.status_code == 429 and first.headers["retry-after"] == "10"
        assert "reverse-dns-pending" in first.text
        await settle(rdns)
        for track in range(2, 120):  # verified search engines are not counted on pages
            assert (await bot.get(f"/tracks/{track}")).status_code == 200
        audio = await bot.get("/tracks/1/stream")
        assert audio.status_code == 403 and "search-engine-content" in audio.text
        assert resolver.questions == [f"PTR {IP}", "A 5-255-253-10.spider.yandex.com"]  # asked once, cached

    run(main())


def test_refuted_claims_are_spoofed(policy) -> None:
    cases = [
        FakeResolver({}),  # no PTR record
        FakeResolver({IP: "crawler.yandex.com.attacker.example"}),  # suffix only looks right
        FakeResolver({IP: "evil-yandex.com"}),
        FakeResolver({IP: "spider.yandex.com"}, {"spider.yandex.com": ["5.255.253.11"]}),  # does not point back
    ]

    async def second_request(bot: Visitor, rdns: ReverseDNSVerifier) -> int:
        await bot.get("/tracks/1")
        await settle(rdns)
        return (await bot.get("/tracks/2")).status_code

    for resolver in cases:
        app, rdns = app_with(policy, resolver)
        assert run(second_request(Visitor(app, IP, YANDEX), rdns)) == 403, resolver.ptr


def test_the_request_never_waits_for_dns(policy) -> None:
    class Slow(FakeResolver):
        release: asyncio.Event

        async def reverse(self, ip: str) -> str | None:
            await self.release.wait()
            return None

    resolver = Slow()
    app, rdns = app_with(policy, resolver, timeout=60)
    bot = Visitor(app, IP, YANDEX)

    async def main() -> None:
        resolver.release = asyncio.Event()
        statuses = [(await bot.get(f"/tracks/{t}")).status_code for t in range(1, 5)]
        assert statuses == [429] * 4 and len(rdns._pending) == 1  # answered while DNS hangs
        resolver.release.set()
        await settle(rdns)

    run(main())


def test_pending_policy_unknown_serves_like_any_visitor_until_confirmed(policy) -> None:
    lenient = dataclasses.replace(policy, pending="unknown", _plans={})
    resolver = FakeResolver({IP: "a.spider.yandex.ru"}, {"a.spider.yandex.ru": [IP]})
    app, rdns = app_with(lenient, resolver)
    bot = Visitor(app, IP, YANDEX)

    async def main() -> tuple[int, int]:
        first = (await bot.get("/tracks/1")).status_code
        await settle(rdns)
        return first, (await bot.get("/tracks/1")).status_code

    assert run(main()) == (200, 200)


def test_a_spoofer_from_a_residential_address_gets_nothing_while_it_is_checked(policy) -> None:
    resolver = FakeResolver({"198.51.100.7": "host-7.broadband.example"})
    app, rdns = app_with(policy, resolver)
    bot = Visitor(app, "198.51.100.7", YANDEX)

    async def main() -> list[int]:
        first = (await bot.get("/tracks/1/stream")).status_code
        await settle(rdns)
        return [first, (await bot.get("/tracks/1/stream")).status_code, (await bot.get("/tracks/2")).status_code]

    assert run(main()) == [429, 403, 403]  # then refuted: spoofed


def test_pending_policy_spoofed_blocks_until_confirmed(policy) -> None:
    strict = dataclasses.replace(policy, pending="spoofed", _plans={})
    resolver = FakeResolver({IP: "a.spider.yandex.ru"}, {"a.spider.yandex.ru": [IP]})
    app, rdns = app_with(strict, resolver)
    bot = Visitor(app, IP, YANDEX)

    async def main() -> tuple[int, int]:
        first = (await bot.get("/tracks/1")).status_code
        await settle(rdns)
        return first, (await bot.get("/tracks/1")).status_code

    assert run(main()) == (403, 200)


def test_dns_failures_are_not_cached_and_negative_answers_expire(policy) -> None:
    class Flaky(FakeResolver):
        fail = True

        async def reverse(self, ip: str) -> str | None:
            if Flaky.fail:
                raise OSError("SERVFAIL")
            return await super().reverse(ip)

    clock = FakeClock()
    resolver = Flaky({IP: "x.yandex.net"}, {"x.yandex.net": [IP]})
    rdns = ReverseDNSVerifier(resolver, clock=clock, negative_ttl=600)
    app = create_app(policy, clock=FakeClock(), reverse_dns=rdns)
    bot = Visitor(app, IP, YANDEX)

    async def main() -> list[int]:
        await bot.get("/tracks/1")
        await settle(rdns)
        Flaky.fail = False  # the failure was not cached: the next request asks again
        await bot.get("/tracks/2")
        await settle(rdns)
        return [(await bot.get(f"/tracks/{t}")).status_code for t in range(3, 60)]

    assert set(run(main())) == {200}
    assert resolver.questions.count(f"PTR {IP}") == 1
