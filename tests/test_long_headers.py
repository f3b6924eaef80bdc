"""Long User-Agents: bounded work and memory per request, and no name hidden by padding.

Servers let through 8 KB to 64 KB of headers. A real browser's User-Agent is a few hundred
bytes; a longer one (more than ``MAX_UA_CHARS``) is padding, read at its ends and judged a
bot unless a name is there. The figures (time per request, memory for 18,000 of them) come
from ``bench/hostile.py``; these tests check the bounds themselves.
"""

from __future__ import annotations

import tracemalloc

import pytest
from support import CHROME, GPTBOT, RULES, FakeClock, Visitor, run

from guard.demo.app import create_app
from guard.identity.identify import MAX_UA_CHARS, Identifier
from guard.identity.kinds import BROWSER, PADDED

PAD = 65536 - 1024  # about as long as a header gets through a server


def padded(head: str, middle: str = "", tail: str = "", size: int = PAD) -> str:
    filler = "abcdefghij klmnopqrst " * (size // 22 + 1)
    return (head + " " + filler[:5000] + middle + " " + filler)[: size - len(tail) - 1] + " " + tail


def test_identification_reads_a_bounded_prefix_and_suffix_of_a_padded_user_agent(policy, monkeypatch) -> None:
    """Was: a 64 KB string was matched whole (18 ms, 280 ms at worst, for 1.5 ms a browser)."""
    identifier = Identifier(policy.catalogue)
    seen: list[int] = []
    lookup = policy.catalogue.lookup

    def counting(raw: bytes):  # type: ignore[no-untyped-def]
        seen.append(len(raw))
        return lookup(raw)

    monkeypatch.setattr(policy.catalogue, "lookup", counting)
    for ua in (padded(CHROME), padded("x", tail=GPTBOT), "\u00e9" * PAD):
        identifier.from_user_agent(ua)
    assert seen and max(seen) <= min(MAX_UA_CHARS + 1, 4097)  # a few KB at most, whatever the header's length


@pytest.mark.parametrize("where", ["middle", "byte 5000", "after 60 KB of browser"])
def test_a_bot_hidden_inside_a_padded_user_agent_is_refused_even_on_pages(policy, where: str) -> None:
    ua = {
        "middle": padded(CHROME, middle=" GPTBot/1.2 "),
        "byte 5000": (CHROME + " " + "x" * (5000 - len(CHROME)) + " GPTBot/1.2 " + "y" * 60000),
        "after 60 KB of browser": CHROME + (" Safari/537.36" * 4300)[:60000] + " GPTBot/1.2 " + "Safari/537.36" * 200,
    }[where]
    assert Identifier(policy.catalogue).from_user_agent(ua).category == PADDED  # the padding is judged
    app = create_app(policy, clock=FakeClock())
    for path in ("/", "/tracks/1", "/tracks/1/stream"):
        assert run(Visitor(app, "198.51.100.80", ua).get(path)).status_code == 403, path


def test_a_name_at_either_end_of_a_padded_user_agent_still_names_it(policy) -> None:
    identifier = Identifier(policy.catalogue)
    for ua in (padded(GPTBOT), padded("x", tail=GPTBOT)):
        identity = identifier.from_user_agent(ua)
        assert identity.agent is not None and identity.agent.name == "GPTBot"


def test_a_long_browser_user_agent_under_the_bound_is_still_a_browser(policy) -> None:
    """In-app browsers and old toolbars make long strings; none is near the bound."""
    ua = CHROME + " " + " ".join(f"Toolbar{i}/1.{i}" for i in range(90))
    assert 1000 < len(ua) < MAX_UA_CHARS
    assert Identifier(policy.catalogue).from_user_agent(ua).category == BROWSER
    app = create_app(policy, clock=FakeClock())
    assert run(Visitor(app, "198.51.100.81", ua).get("/tracks/1")).status_code == 200


def test_the_identity_cache_is_bounded_in_bytes(policy) -> None:
    from guard.identity.identify import CACHE_BYTES, ENTRY_BYTES
    from guard.lru import SizedLRU

    identifier = Identifier(policy.catalogue)
    size = MAX_UA_CHARS - 8
    for n in range(6000):  # each just under the bound, so each is cached
        identifier.from_user_agent(f"{n:06d} {CHROME} {'z' * size}"[:size])
    cache = identifier._cache
    assert isinstance(cache, SizedLRU)
    assert cache.used <= CACHE_BYTES and len(cache) * (size + ENTRY_BYTES) <= CACHE_BYTES
    identifier.from_user_agent(CHROME)
    assert identifier._cache.peek(CHROME) is not None  # a browser still gets its slot


def test_distinct_huge_user_agents_do_not_grow_memory(policy) -> None:
    """Was: 18,000 distinct 64 KB strings took a process from 65 MiB to 1,170 MiB (16 KB: +395 MiB)."""
    app = create_app(policy, clock=FakeClock(), reload_interval=0)
    visitor = Visitor(app, "198.51.100.82", CHROME)
    filler = "Mozilla/5.0 (X11; Linux x86_64) " * 520

    async def main() -> int:
        await visitor.get("/")  # start-up work first
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(1500):
                ua = f"{n:08d}" + filler[:16360] + f"{n:08d}"
                await visitor.get("/tracks/1", headers={"user-agent": ua})
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    grown = run(main())
    assert grown < 8 << 20, f"{grown / 2**20:.1f} MiB for 1,500 distinct 16 KB User-Agents"


def test_a_long_licence_token_is_refused_and_never_kept(tmp_path) -> None:
    from guard.consent.licences import Licences, load_key

    licences = Licences(load_key(tmp_path / "key.json"))
    for n in range(50):
        assert licences.verify(f"{n:08d}" + "e" * 60000) == "licence token too long"
    assert len(licences._cache) == 0


def test_the_caches_of_paths_and_forwarded_chains_are_bounded_in_bytes() -> None:
    from guard.policy.engine import Guard
    from guard.policy.rules import load_rules

    policy = load_rules(RULES)
    guard = Guard(policy, trusted_proxies=["127.0.0.1/32"])
    for n in range(20000):  # 20,000 distinct keys of 500 bytes: 10 MB of text, more than either holds
        policy.paths.classify(f"/tracks/{n:06d}/" + "p" * 486)
        chain = ", ".join(f"10.{n >> 8 & 255}.{n & 255}.{i}" for i in range(34))[:500]
        guard.resolver.resolve({"client": ("127.0.0.1", 1), "headers": [(b"x-forwarded-for", chain.encode())]})
    for cache in (policy.paths._classified, guard.resolver._forwarded):
        assert len(cache) > 5000 and cache.used <= 8 << 20  # full up to its bytes, and no further
