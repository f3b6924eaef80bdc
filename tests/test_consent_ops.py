"""Consent ops: the commands (show/set/revoke on file and Redis, report, license issue, explain),
the demo as shipped, the application's own consent source and artist resolver."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import GPTBOT, RULES, FakeClock, Visitor, run

from guard.consent.artists import ArtistMapper
from guard.consent.model import ArtistConsent, Consent
from guard.consent.settings import ConsentSettings
from guard.consent.sources import UNKNOWN, AppSource
from guard.demo.app import create_app
from guard.testing import demo_process

SHIPPED = RULES.parent / "consent.yaml"
GPTBOT_IP = "20.171.206.10"  # in rules/ranges/gptbot.json


def guard(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "guard", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_license_issue_prints_a_token_the_demo_accepts_and_report_totals_it(tmp_path: Path) -> None:
    env = {"GUARD_LICENCE_KEY": str(tmp_path / "key.json"), "GUARD_CONSENT_LEDGER": str(tmp_path / "ledger.jsonl")}
    token = guard("license", "issue", "--operator", "OpenAI", "--artist", "a7", "--usage", "ai-train", env=env)
    token = token.stdout.strip()
    assert token.count(".") == 2 and (tmp_path / "key.json").stat().st_mode & 0o077 == 0  # a JWS; key kept private
    with demo_process("--trusted-proxy", "127.0.0.1/32", env=env) as base:
        headers = {"user-agent": GPTBOT, "x-forwarded-for": GPTBOT_IP}
        assert httpx.get(base + "/api/tracks/7", headers=headers).status_code == 402
        for track in (7, 507, 1007):
            r = httpx.get(f"{base}/api/tracks/{track}", headers={**headers, "authorization": f"License {token}"})
            assert r.status_code == 200 and r.json()["artist_id"] == "a7"
        assert (
            httpx.get(base + "/api/tracks/8", headers={**headers, "authorization": f"License {token}"}).status_code
            == 403
        )
    report = json.loads(guard("consent", "report", "--json", env=env).stdout)
    assert [(r["artist"], r["usage"], r["operator"], r["accesses"], r["licensed"]) for r in report] == [
        ("a7", "ai-train", "OpenAI", 3, 3)
    ]
    table = guard("consent", "report", "--artist", "a7", "--since", "1h", env=env).stdout
    assert "a7" in table and table.splitlines()[-1].split()[:2] == ["total", "3"]
    assert json.loads(guard("consent", "report", "--json", "--artist", "a8", env=env).stdout) == []


def test_demo_banner_names_the_consent_file(tmp_path: Path, monkeypatch, capsys) -> None:
    import uvicorn

    from guard.ops.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    for name in ("GUARD_CONSENT", "GUARD_RULES", "GUARD_TRUSTED_PROXIES"):  # the command sets them
        monkeypatch.setenv(name, "")
    consent = tmp_path / "mine.yaml"
    shutil.copy(SHIPPED, consent)
    assert main(["demo", "--consent", str(consent)]) == 0
    assert f"consent={consent}" in capsys.readouterr().err
    assert os.environ["GUARD_CONSENT"] == str(consent)
    os.environ["GUARD_CONSENT"] = ""
    assert main(["demo"]) == 0 and f"consent={SHIPPED}" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("version: 1\nartists: {a7: [{usage: sell-everything}]}\n")
    with pytest.raises(SystemExit) as exit:
        main(["demo", "--consent", str(tmp_path / "bad.yaml")])
    assert exit.value.code == 2 and "sell-everything" in capsys.readouterr().err


def test_consent_show_set_revoke_on_a_file(tmp_path: Path) -> None:
    file = str(tmp_path / "consent.yaml")
    shutil.copy(SHIPPED, file)
    guard(
        "consent",
        "set",
        "a9",
        "--usage",
        "ai-input",
        "--operator",
        "Anthropic",
        "--until",
        "2031-01-01",
        "--file",
        file,
    )
    shown = json.loads(guard("consent", "show", "--artist", "a9", "--json", "--file", file).stdout)
    assert shown == {"a9": [{"usage": "ai-input", "operators": ["anthropic"], "until": "2031-01-01T00:00:00Z"}]}
    guard("consent", "revoke", "a7", "--file", file)
    assert "a7" not in json.loads(guard("consent", "show", "--json", "--file", file).stdout)
    bad = guard("consent", "set", "a9", "--usage", "ai-train", "--price", "lots", "--file", file, ok=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "price" in bad.stderr
    assert json.loads(guard("consent", "show", "--artist", "a9", "--json", "--file", file).stdout)["a9"]  # unchanged


def test_consent_show_set_revoke_on_redis(redis_url: str) -> None:
    guard("consent", "set", "a7", "--usage", "ai-train", "--price", "USD 0.03", "--redis-url", redis_url)
    guard("consent", "set", "a7", "--usage", "ai-input", "--redis-url", redis_url)
    shown = json.loads(guard("consent", "show", "--json", "--redis-url", redis_url).stdout)
    assert shown == {"a7": [{"usage": "ai-train", "price": "USD 0.03"}, {"usage": "ai-input"}]}
    guard("consent", "revoke", "a7", "--usage", "ai-train", "--redis-url", redis_url)
    assert json.loads(guard("consent", "show", "--json", "--redis-url", redis_url).stdout) == {
        "a7": [{"usage": "ai-input"}]
    }
    guard("consent", "revoke", "a7", "--redis-url", redis_url)
    assert json.loads(guard("consent", "show", "--json", "--redis-url", redis_url).stdout) == {}


def test_explain_shows_which_consent_and_licence_applied(tmp_path: Path) -> None:
    env = {"GUARD_LICENCE_KEY": str(tmp_path / "key.json"), "GUARD_CONSENT_LEDGER": str(tmp_path / "ledger.jsonl")}
    token = guard("license", "issue", "--operator", "OpenAI", "--artist", "a7", "--usage", "ai-train", env=env)
    common = ["explain", "--ua", GPTBOT, "--ip", "127.0.0.1", "--trusted-proxy", "127.0.0.1/32"]
    common += ["--header", f"X-Forwarded-For: {GPTBOT_IP}", "--consent", str(SHIPPED)]
    licensed = ["--header", f"Authorization: License {token.stdout.strip()}", "--path", "/api/tracks/7"]
    report = json.loads(guard(*common, *licensed, "--json", env=env).stdout)["consent"]
    assert report["artist"] == "a7" and report["consent"] == {"usage": "ai-train"}
    assert report["licence"]["operator"] == "OpenAI" and report["verdict"]["outcome"] == "licensed"
    text = guard(*common, *licensed, env=env).stdout
    assert "consent:  source file" in text and "verdict: 200 licensed" in text
    unpaid = json.loads(guard(*common, "--path", "/api/tracks/7", "--json", env=env).stdout)["consent"]
    assert unpaid["verdict"]["status"] == 402 and unpaid["licence"] is None
    assert not (tmp_path / "ledger.jsonl").exists()  # explaining records nothing


# -- the application's side ----------------------------------------------------------------------


def test_the_app_source_is_cached_shared_and_fails_closed() -> None:
    calls: list[str] = []
    clock = FakeClock()

    async def lookup(artist: str):
        calls.append(artist)
        await asyncio.sleep(0)
        if artist == "slow":
            await asyncio.sleep(3600)
        if artist == "broken":
            raise RuntimeError("database down")
        return [{"usage": "ai-train"}] if artist == "a7" else None

    source = AppSource(lookup, ttl=30, timeout=0.05, cache_size=2, clock=clock)

    async def main() -> None:
        first = await asyncio.gather(*(source.get("a7") for _ in range(10)))  # one call for ten requests
        assert all(isinstance(r, ArtistConsent) and r.consents[0].usage == "ai-train" for r in first)
        assert calls == ["a7"]
        assert await source.get("a7") is first[0] and calls == ["a7"]  # cached
        clock.advance(31)
        assert source.peek("a7") is first[0]  # stale while asked again in the background, never waiting
        await asyncio.sleep(0.01)
        assert calls == ["a7", "a7"]
        assert await source.get("slow") is None and await source.get("broken") is None  # no consent
        assert await source.get("a8") is None
        assert source.peek("never-asked") is UNKNOWN
        assert await source.get("never-asked") is None and calls.count("never-asked") == 1  # the same call
        assert len(source._cache) <= 2  # bounded

    run(main())


def test_the_app_resolver_maps_tracks_to_artists_cached() -> None:
    calls: list[str] = []

    async def resolver(track: str) -> str | None:
        calls.append(track)
        return {"1": "a7", "2": "bad id/with slash"}.get(track)

    mapper = ArtistMapper(resolver=resolver, cache_size=10)

    async def main() -> None:
        assert mapper.from_path("/artists/a7") == "a7" and mapper.from_path("/api/artists/x%2Fy") is None
        assert await mapper.resolve("/tracks/1", "1") == "a7"
        assert await mapper.resolve("/tracks/1/stream", "1") == "a7" and calls == ["1"]
        assert await mapper.resolve("/tracks/2", "2") is None  # a malformed id is never used
        assert mapper.peek("/tracks/3", "3") is UNKNOWN  # never waits
        for _ in range(10):  # let the background lookup run
            await asyncio.sleep(0)
        assert calls == ["1", "2", "3"]

    run(main())


def test_an_app_consent_source_behind_the_middleware(tmp_path: Path) -> None:
    consents = {"a7": [Consent("ai-train")]}

    async def lookup(artist: str):
        return ArtistConsent(artist, tuple(consents.get(artist, ())))

    settings = ConsentSettings(
        source="app", ledger=str(tmp_path / "ledger.jsonl"), licence_key=str(tmp_path / "key.json")
    )
    clock = FakeClock()
    app = create_app(RULES, clock=clock, consent=settings, consent_lookup=lookup)
    token = app.consent.licences.issue("OpenAI", ["a7"], ["ai-train"], now=clock())  # type: ignore[union-attr]
    gptbot = Visitor(app, GPTBOT_IP, GPTBOT)

    async def main() -> None:
        r = await gptbot.get("/api/tracks/7", headers={"authorization": f"License {token}"})
        assert r.status_code == 200 and r.headers["content-usage"] == "train-ai=y"
        consents.clear()  # the application withdraws; its answers are cached for cache_ttl ...
        cached = await gptbot.get("/api/tracks/507", headers={"authorization": f"License {token}"})
        assert cached.status_code == 200
        app.consent.source.forget("a7")  # type: ignore[union-attr]  # ... unless it says so
        r = await gptbot.get("/api/tracks/507", headers={"authorization": f"License {token}"})
        assert r.status_code == 403

    run(main())


def test_redis_down_reads_as_no_consent() -> None:
    from guard.consent.sources import RedisSource
    from guard.stores.redis import redis_client
    from guard.testing import free_port

    async def main() -> None:
        client = redis_client(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2)
        source = RedisSource(client, timeout=0.5)
        assert await source.get("a7") is None  # nobody listens there: fail closed for AI
        await client.aclose()

    run(main())


def test_a_consent_covers_its_usage_operators_tracks_and_period_only() -> None:
    from guard.consent.model import ConsentError, parse_artist

    record = parse_artist(
        "a7",
        [
            {
                "usage": "ai-train",
                "operators": ["OpenAI"],
                "tracks": [7, "507"],
                "from": "2026-01-01",
                "until": "2026-02-01",
            }
        ],
    )
    jan = 1_767_225_600 + 86400  # 2026-01-02
    assert record.permits("ai-train", "openai", "507", jan) is not None
    for usage, operator, track, when in [
        ("ai-input", "OpenAI", "7", jan),
        ("ai-train", "Anthropic", "7", jan),
        ("ai-train", None, "7", jan),
        ("ai-train", "OpenAI", "1007", jan),
        ("ai-train", "OpenAI", None, jan),
        ("ai-train", "OpenAI", "7", 1_767_225_600 - 1),  # before 'from'
        ("ai-train", "OpenAI", "7", 1_769_904_000),  # 'until' is exclusive
    ]:
        assert record.permits(usage, operator, track, when) is None, (usage, operator, track, when)
    for bad in (
        {"usage": "sell"},
        {"usage": "ai-train", "price": "5 dollars"},
        {"usage": "ai-train", "from": "2026-02-01", "until": "2026-01-01"},
        {"usage": "ai-train", "until": "soon"},
        {"usage": "ai-train", "operators": [{"x": 1}]},
        {"usage": "ai-train", "typo": 1},
    ):
        with pytest.raises(ConsentError):
            parse_artist("a7", [bad])
    with pytest.raises(ConsentError):
        parse_artist("../etc", [])


def test_a_bad_consent_file_edit_keeps_the_last_good_consents(tmp_path: Path) -> None:
    from guard.consent.sources import FileSource

    file = tmp_path / "consent.yaml"
    shutil.copy(SHIPPED, file)
    source = FileSource(file)

    async def main() -> None:
        file.write_text("version: 1\nartists: {a7: [{usage: nonsense}]}\n")
        os.utime(file, ns=(1, 1))
        await source.refresh()
        assert (await source.get("a7")) is not None  # still the last good consents
        file.write_text("version: 1\nartists: {a8: [{usage: ai-input}]}\n")
        os.utime(file, ns=(2, 2))
        await source.refresh()
        assert await source.get("a7") is None and await source.get("a8") is not None

    run(main())


def test_the_rules_file_turns_the_consent_gate_on(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES.parent, rules_dir)
    rules = rules_dir / "default.yaml"
    section = (
        "consent:\n  source: file\n  file: consent.yaml\n  price: USD 0.02\n  licence_key: licence-key.json\n"
        "  ledger: ledger.jsonl\n  public_url: https://music.example\n"
    )
    rules.write_text(rules.read_text().replace("\nrules:\n", "\n" + section + "\nrules:\n", 1))
    from guard.demo.app import artist_of

    app = create_app(str(rules), clock=FakeClock(), artist_resolver=artist_of, reload_interval=0)
    assert app.consent is not None and app.consent.settings.price is not None
    gptbot = Visitor(app, GPTBOT_IP, GPTBOT)

    async def main() -> None:
        unpaid = await gptbot.get("/api/tracks/7")
        assert unpaid.status_code == 402 and unpaid.headers["crawler-price"] == "USD 0.02"
        assert unpaid.headers["link"].startswith("<https://music.example/license.xml>")
        token = app.consent.licences.issue("OpenAI", ["a7"], ["ai-train"], now=app.guard.clock())  # type: ignore[union-attr]
        assert (await gptbot.get("/api/tracks/7", headers={"authorization": f"License {token}"})).status_code == 200

    run(main())
    assert (rules_dir / "licence-key.json").exists() and len((rules_dir / "ledger.jsonl").read_text().splitlines()) == 1
    assert guard("check", str(rules)).returncode == 0
