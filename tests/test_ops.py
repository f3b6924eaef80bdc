"""Ops: explain, shadow mode, hot reload, metrics, decision logs, guard top."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support import CHROME, GPTBOT, RULES, FakeClock, FakeResolver, Visitor, run

from guard.demo.app import create_app, platform
from guard.identity.rdns import ReverseDNSVerifier
from guard.middleware import GuardMiddleware
from guard.ops.explain import explain, format_text
from guard.stores.redis import RedisStore

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def test_explain_a_blocked_crawler_a_spoofed_bot_and_a_throttled_scraper(policy) -> None:
    guard = create_app(policy, clock=FakeClock(), reverse_dns=ReverseDNSVerifier(FakeResolver())).guard

    async def main() -> None:
        crawler = await explain(guard, user_agent=GPTBOT, ip="198.51.100.1", path="/tracks/1/stream")
        assert crawler["decision"]["action"] == "block" and crawler["decision"]["rule"] == "ai-training"
        assert crawler["identity"]["agent"] == "GPTBot" and crawler["identity"]["category"] == "ai_training"
        assert crawler["rules"][0]["result"] == "matched: block"
        assert crawler["rules"][1]["result"] == "not reached: rule ai-training decided"

        spoofed = await explain(guard, user_agent=GOOGLEBOT, ip="203.0.113.5", path="/tracks/1")
        assert spoofed["decision"]["rule"] == "spoofed-bot"
        assert spoofed["identity"]["verified"] is False and spoofed["identity"]["evidence"] == "ip ranges"
        assert "FAILED verification by ip ranges" in format_text(spoofed)

        scraper = guard.resolver.resolve({"client": ("192.0.2.33", 1), "headers": []})
        for track in range(1, 41):
            await guard.decide(guard.facts(scraper, CHROME, f"/api/tracks/{track}"))
        report = await explain(guard, user_agent=CHROME, ip="192.0.2.33", path="/api/tracks/41")
        assert report["decision"]["action"] == "throttle" and report["decision"]["rule"] == "track-sprint"
        sprint = next(r for r in report["rules"] if r["id"] == "track-sprint")
        assert sprint["counter"]["count"] == 40 and sprint["counter"]["would_deny"] is True
        # Explaining counted nothing: the same question gives the same answer.
        again = await explain(guard, user_agent=CHROME, ip="192.0.2.33", path="/api/tracks/41")
        assert next(r for r in again["rules"] if r["id"] == "track-sprint")["counter"]["count"] == 40

    run(main())


def test_guard_explain_command() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard.ops.cli",
            "explain",
            "--ua",
            GPTBOT,
            "--ip",
            "198.51.100.1",
            "--path",
            "/tracks/1/stream",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("decision: BLOCK by rule ai-training")
    assert "ai-training              line" in result.stdout


def shadowed(policy, rule_id: str):
    rules = [dataclasses.replace(r, shadow=True) if r.id == rule_id else r for r in policy.rules]
    return dataclasses.replace(policy, rules=rules, _plans={})


def metric(app: GuardMiddleware, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(_scrape(app)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _scrape(app: GuardMiddleware) -> str:
    from prometheus_client import generate_latest

    return generate_latest(app.observer.registry).decode()


def test_a_shadow_rule_lets_the_request_through_and_counts_what_it_would_have_done(policy, caplog) -> None:
    app = create_app(shadowed(policy, "ai-training"), clock=FakeClock())
    caplog.set_level(logging.INFO, logger="guard.decisions")
    r = run(Visitor(app, "198.51.100.2", GPTBOT).get("/tracks/1"))
    assert r.status_code == 200
    assert metric(app, "guard_decisions_total", rule="ai-training", shadow="true") == 1
    line = json.loads(caplog.records[-1].getMessage())
    assert line["shadow_rules"] == ["ai-training"] and line["action"] == "allow" and line["agent"] == "GPTBot"


def test_a_shadow_limit_is_counted_but_not_enforced(policy) -> None:
    app = create_app(shadowed(policy, "track-sprint"), clock=FakeClock())
    scraper = Visitor(app, "198.51.100.3", CHROME)

    async def main() -> list[int]:
        return [(await scraper.get(f"/api/tracks/{t}")).status_code for t in range(1, 61)]

    assert run(main()) == [200] * 60  # past the 40-track limit: shadow only
    assert metric(app, "guard_decisions_total", rule="track-sprint", shadow="true") == 20


def test_global_shadow_mode_enforces_nothing_but_logs_everything(policy, caplog) -> None:
    app = create_app(dataclasses.replace(policy, shadow=True), clock=FakeClock())
    caplog.set_level(logging.INFO, logger="guard.decisions")
    assert run(Visitor(app, "198.51.100.4", GPTBOT, pages_first=False).get("/tracks/1/stream")).status_code == 200
    record = json.loads(caplog.records[-1].getMessage())
    assert record["action"] == "block" and record["enforced"] is False and record["rule"] == "ai-training"
    assert metric(app, "guard_decisions_total", action="block", rule="ai-training", shadow="true") == 1


def copy_rules(tmp_path: Path) -> Path:
    for name in ("default.yaml", "agents.yaml", "ai-robots.json", "crawler-lists.json"):
        shutil.copy(RULES.parent / name, tmp_path / name)
    shutil.copytree(RULES.parent / "ranges", tmp_path / "ranges")
    return tmp_path / "default.yaml"


def test_reload_swaps_rules_keeps_counters_and_survives_a_broken_file(tmp_path: Path, caplog) -> None:
    rules = copy_rules(tmp_path)
    app = GuardMiddleware(platform(), rules, clock=FakeClock(), reload_interval=0)
    scraper = Visitor(app, "198.51.100.5", CHROME)
    listener = Visitor(app, "198.51.100.6", CHROME)
    caplog.set_level(logging.ERROR, logger="guard")

    async def main() -> None:
        for track in range(1, 41):
            assert (await scraper.get(f"/api/tracks/{track}")).status_code == 200
        assert (await listener.get("/tracks/1")).status_code == 200

        text = rules.read_text().replace(
            "rules:\n", "rules:\n  - id: closed-pages\n    match: {path: pages}\n    action: block\n", 1
        )
        rules.write_text(text)
        assert await app.reload() is True
        assert (await listener.get("/tracks/1")).status_code == 403  # the new rule is enforced
        assert (await scraper.get("/api/tracks/41")).status_code == 429  # the counters carried over

        rules.write_text(text.replace("action: block\n", "action: explode\n", 1))
        assert await app.reload() is False  # a broken file is refused...
        r = await listener.get("/tracks/1")
        assert r.status_code == 403 and "closed-pages" in r.text  # ...and the last good rules still hold

    run(main())
    assert (
        "keeping the last good rules" in caplog.text
        and "'explode' is not one of: allow, block, throttle or challenge" in caplog.text
    )


def test_sighup_reloads(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    app = GuardMiddleware(platform(), rules, clock=FakeClock(), reload_interval=0)
    visitor = Visitor(app, "198.51.100.7", CHROME)

    async def main() -> int:
        assert (await visitor.get("/tracks/1")).status_code == 200  # installs the handler
        rules.write_text(rules.read_text().replace("rules:\n", "rules:\n  - id: hup\n    action: block\n", 1))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(1000):
            if any(r.id == "hup" for r in app.policy.rules):
                break
            await asyncio.sleep(0.01)  # the reload runs on the loop, off the request path
        return (await visitor.get("/tracks/1")).status_code

    assert run(main()) == 403


def test_metrics_are_served_only_to_allowed_addresses(policy) -> None:
    app = create_app(dataclasses.replace(policy, metrics_path="/metrics"), clock=FakeClock())

    async def main() -> None:
        await Visitor(app, "198.51.100.8", GPTBOT).get("/tracks/1")
        scrape = await Visitor(app, "127.0.0.1", CHROME).get("/metrics")
        assert scrape.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        assert {"guard_decisions", "guard_check_seconds"} <= set(families)
        blocked = [s for s in families["guard_decisions"].samples if s.labels.get("rule") == "ai-training"]
        assert blocked and blocked[0].value == 1
        assert (await Visitor(app, "198.51.100.9", CHROME).get("/metrics")).status_code == 404  # the app's 404

    run(main())


def test_store_health_is_exported(policy, redis_server, redis_url) -> None:
    store = RedisStore.from_url(redis_url, timeout=1.0)
    app = create_app(policy, store=store, clock=FakeClock())

    async def main() -> None:
        await Visitor(app, "198.51.100.10", CHROME).get("/api/tracks/1")
        await store.close()

    run(main())
    assert metric(app, "guard_store_calls_total") >= 1
    assert metric(app, "guard_store_down") == 0


def test_guard_top_renders_against_a_real_redis(policy, redis_url) -> None:
    store = RedisStore.from_url(redis_url, timeout=1.0)
    app = create_app(policy, store=store, clock=FakeClock())

    async def main() -> None:
        scraper = Visitor(app, "192.0.2.150", CHROME)
        for track in range(1, 61):
            await scraper.get(f"/api/tracks/{track}")
        for _ in range(5):
            await Visitor(app, "198.51.100.11", GPTBOT).get("/tracks/1")
        await app.top.flush()
        await store.close()

    run(main())
    result = subprocess.run(
        [sys.executable, "-m", "guard.ops.cli", "top", "--once", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    scraper = next(line for line in lines if line.startswith("192.0.2.150"))
    assert scraper.split()[1:3] == ["20", "60"]  # 20 of its 60 requests denied
    assert any(line.startswith("GPTBot") and line.split()[1:3] == ["5", "5"] for line in lines)


def test_a_changed_rules_file_is_noticed_and_reloaded(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    app = GuardMiddleware(platform(), rules, clock=FakeClock(), reload_interval=0.01)
    visitor = Visitor(app, "198.51.100.12", CHROME)

    async def main() -> int:
        assert (await visitor.get("/tracks/1")).status_code == 200  # starts the watcher
        text = rules.read_text().replace("rules:\n", "rules:\n  - id: noticed\n    action: block\n", 1)
        rules.write_text(text)
        os.utime(rules, (os.path.getatime(rules), os.path.getmtime(rules) + 5))  # a new mtime, whatever the clock
        for _ in range(500):  # the watcher polls off the request path
            if any(r.id == "noticed" for r in app.policy.rules):
                break
            await asyncio.sleep(0.01)
        return (await visitor.get("/tracks/1")).status_code

    assert run(main()) == 403
