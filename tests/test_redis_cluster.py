"""The same store on a real three-master Redis Cluster started by the test."""

from __future__ import annotations

import pytest
from support import run
from test_redis_store import T0, traffic

from guard.identity.address import ClientResolver
from guard.policy.engine import Guard
from guard.stores.memory import MemoryStore
from guard.stores.redis import RedisStore
from guard.testing import RedisCluster


@pytest.fixture(scope="module")
def cluster():
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


def test_cluster_gives_the_memory_store_decisions_and_spreads_keys(policy, cluster) -> None:
    store = RedisStore.from_url(cluster.url, timeout=2.0)
    clock = [T0]
    guards = [Guard(policy, MemoryStore(), clock=lambda: clock[0]), Guard(policy, store, clock=lambda: clock[0])]
    resolver = ClientResolver()

    async def main() -> int:
        differences = 0
        for step, ip, ua, path, _ in traffic(seed=11, n=3000):
            clock[0] += step
            client = resolver.resolve({"client": (ip, 1), "headers": []})
            a, b = [await g.decide(g.facts(client, ua, path)) for g in guards]
            differences += (a.action, a.rule_id, a.retry_after_header) != (b.action, b.rule_id, b.retry_after_header)
        await store.close()
        return differences

    assert run(main()) == 0
    assert store.stats.errors == 0 and store.stats.fallbacks == 0
    per_node = [node.client().dbsize() for node in cluster.nodes]
    assert sum(1 for n in per_node if n > 0) >= 2, per_node  # subnets hash to different masters


def test_consents_and_the_ledger_on_a_cluster(cluster) -> None:
    """All consent keys share one hash tag: the atomic set/revoke and the stream work on a cluster."""
    from guard.consent import admin
    from guard.consent.ledger import Access, RedisLedger
    from guard.consent.sources import RedisSource

    async def main() -> tuple:
        registry = admin.Registry(redis_url=cluster.url)
        await admin.set_consent(registry, "a7", "ai-train", operators=["OpenAI"])
        await admin.set_consent(registry, "a9", "ai-input")
        await admin.revoke(registry, "a9")
        client = registry._client
        source = RedisSource(client)
        a7, a9 = await source.get("a7"), await source.get("a9")
        ledger = RedisLedger(client)
        await ledger.record(Access(T0, "a7", "7", "OpenAI", "GPTBot", "ai-train", licence="lic_x"))
        accesses = await ledger.read()
        await registry.close()
        return a7, a9, accesses

    a7, a9, accesses = run(main())
    assert a7 is not None and a7.permits("ai-train", "OpenAI", "7", T0) and not a7.permits("ai-train", "Meta", "7", T0)
    assert a9 is None and [a.licence for a in accesses] == ["lic_x"]
