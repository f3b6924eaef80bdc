"""The guard command: every bad argument or unreachable service is one line, never a traceback.

Each case runs ``python -m guard.ops.cli`` in a subprocess, as a user's shell would.
Exit status 2 is a wrong command line (caught while parsing), 1 a command that ran and failed.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import RULES, free_port

from guard import __version__


def guard(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "guard.ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("guard: error: ")
    for word in words:
        assert word in lines[0]


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


USAGE_ERRORS = [
    (["demo", "--trusted-proxy", "10.0.0.0/33"], {}, "10.0.0.0/33"),
    (["demo"], {"GUARD_TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.0/33"}, "GUARD_TRUSTED_PROXIES"),
    (["demo", "--port", "70000"], {}, "--port"),
    (["demo"], {"GUARD_PORT": "eighty"}, "GUARD_PORT"),
    (["demo", "--workers", "0"], {}, "--workers"),
    (["explain", "--trusted-proxy", "nope", "--ip", "192.0.2.1", "--path", "/"], {}, "'nope'"),
    (["explain", "--ip", "banana", "--path", "/"], {}, "'banana' is not an IP address"),
    (["explain", "--ip", "192.0.2.1", "--path", "tracks"], {}, "--path"),
    (["explain", "--ip", "192.0.2.1", "--path", "/", "--header", "no colon"], {}, "--header"),
    (["explain", "--ip", "192.0.2.1"], {}, "--path"),
    (["top", "--redis-url", "http://foo"], {}, "'http://foo' is not a Redis URL"),
    (["top"], {"GUARD_REDIS_URL": "http://foo"}, "GUARD_REDIS_URL"),
    (["top", "--redis-url", "redis://localhost:99999"], {}, "port"),
    (["top", "--minutes", "0"], {}, "--minutes"),
    (["top", "--minutes", "61"], {}, "--minutes"),
    (["top", "--limit", "-1"], {}, "--limit"),
    (["top", "--interval", "0"], {}, "--interval"),
    (["top", "--interval", "nan"], {}, "--interval"),
    (["update-ranges", "--timeout", "soon"], {}, "--timeout"),
    (["no-such-command"], {}, "no-such-command"),
    ([], {}, "COMMAND"),
]


@pytest.mark.parametrize(("argv", "env", "word"), USAGE_ERRORS, ids=[" ".join(a) or "-" for a, _, _ in USAGE_ERRORS])
def test_a_bad_argument_is_one_line_and_exit_status_2(argv: list[str], env: dict[str, str], word: str) -> None:
    assert_one_line_error(guard(*argv, env=env), 2, word)


def test_explain_against_an_unreachable_redis_is_one_line_and_exit_status_1() -> None:
    url = unreachable_redis()
    result = guard("explain", "--ip", "192.0.2.1", "--path", "/", "--redis-url", url)
    assert_one_line_error(result, 1, "cannot reach Redis", url)


def test_top_against_an_unreachable_redis_is_one_line_and_exit_status_1() -> None:
    url = unreachable_redis()
    assert_one_line_error(guard("top", "--once", "--redis-url", url), 1, "cannot reach Redis", url)
    assert_one_line_error(guard("top", "--once", env={"GUARD_REDIS_URL": url}), 1, url)


def test_top_without_any_redis_says_what_to_give() -> None:
    assert_one_line_error(guard("top", "--once"), 1, "--redis-url")


def test_a_missing_rules_file_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert_one_line_error(guard("check", missing), 1, missing)
    assert_one_line_error(guard("robots", "--rules", missing), 1, missing)
    assert_one_line_error(guard("explain", "--ip", "192.0.2.1", "--path", "/", "--rules", missing), 1, missing)


def test_demo_refuses_workers_on_the_memory_store_unless_told() -> None:
    assert_one_line_error(guard("demo", "--workers", "2"), 1, "split the counters", "--redis-url", "--split-counters")


def test_version_and_help_show_defaults_and_environment_variables() -> None:
    assert guard("--version").stdout.strip() == f"guard {__version__}"
    help_text = " ".join(guard("demo", "--help").stdout.split())
    for words in ("env GUARD_REDIS_URL", "env GUARD_TRUSTED_PROXIES", "env GUARD_RULES", "default: 8000"):
        assert words in help_text
    assert "default: 5" in " ".join(guard("top", "--help").stdout.split())


def test_explain_reads_trusted_proxies_from_the_environment() -> None:
    header = "X-Forwarded-For: 203.0.113.9"
    argv = ["explain", "--ip", "10.1.2.3", "--path", "/tracks/1", "--header", header, "--json"]
    believed = guard(*argv, env={"GUARD_TRUSTED_PROXIES": "10.0.0.0/8"})
    ignored = guard(*argv)
    assert believed.returncode == ignored.returncode == 0, believed.stderr + ignored.stderr
    assert "203.0.113.9" in believed.stdout
    assert "203.0.113.9" not in ignored.stdout


def _rules_with_an_unreachable_rule(folder: Path) -> Path:
    rules = folder / "rules.yaml"
    rules.write_text(
        f"version: 1\ncatalogue: {RULES.parent / 'agents.yaml'}\npaths:\n  pages: [/]\n"
        "rules:\n"
        "  - {id: everyone, match: {}, action: allow}\n"
        "  - {id: never, match: {category: ai_training}, action: block}\n"
    )
    return rules


def test_check_strict_fails_with_an_error_line_not_ok(tmp_path: Path) -> None:
    rules = str(_rules_with_an_unreachable_rule(tmp_path))
    lenient = guard("check", rules)
    assert lenient.returncode == 0 and ": ok (" in lenient.stdout
    strict = guard("check", "--strict", rules)
    assert strict.returncode == 1
    assert "ok" not in strict.stdout
    assert "guard: error:" in strict.stderr and "--strict" in strict.stderr
    assert "Traceback" not in strict.stderr


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_update_ranges_names_each_url_and_ends_with_a_summary(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "googlebot.json").write_text('{"prefixes": [{"ipv4Prefix": "66.249.64.0/27"}]}')
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: _Files(*a, directory=served, **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        catalogue = tmp_path / "agents.yaml"
        (tmp_path / "ai-robots.json").write_text((RULES.parent / "ai-robots.json").read_text())
        (tmp_path / "crawler-lists.json").write_text((RULES.parent / "crawler-lists.json").read_text())
        categories = (RULES.parent / "agents.yaml").read_text().split("\nagents:")[0]
        catalogue.write_text(
            categories + "\nagents:\n"
            f"  - {{name: Googlebot, operator: Google, category: search_engine,\n"
            f"     verify: {{ranges: {base}/googlebot.json}}}}\n"
            f"  - {{name: Bingbot, operator: Microsoft, category: search_engine,\n"
            f"     verify: {{ranges: {base}/bingbot.json}}}}\n"
        )
        rules = tmp_path / "rules.yaml"
        rules.write_text("version: 1\ncatalogue: agents.yaml\npaths:\n  pages: [/]\nrules: []\n")
        result = guard("update-ranges", "--rules", str(rules))
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert f"{base}/googlebot.json" in result.stdout and f"{base}/bingbot.json" in result.stdout
    bingbot = next(line for line in result.stdout.splitlines() if line.startswith("Bingbot:"))
    assert "kept" not in bingbot and "no file written" in bingbot  # there was no bingbot.json to keep
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("update-ranges: 1 of 2 range files updated in ")
    assert "1 failed (0 kept their last good file, 1 have none)" in summary
    assert (tmp_path / "ranges" / "googlebot.json").exists()
    assert not (tmp_path / "ranges" / "bingbot.json").exists()


def test_update_signers_refuses_private_addresses_and_keeps_the_file(tmp_path: Path) -> None:
    signers = tmp_path / "signers.json"
    keys = [{"kty": "OKP", "crv": "Ed25519", "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}]
    signers.write_text(json.dumps({"https://127.0.0.1:9": {"agent": "Googlebot", "keys": keys}}))
    before = signers.read_text()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nextends: default\nsignatures: {directory: signers.json}\n")
    result = guard("update-signers", "--rules", str(rules))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "non-public address 127.0.0.1" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("1 failed and kept their last good keys")
    assert signers.read_text() == before
    bare = tmp_path / "bare.yaml"
    bare.write_text("version: 1\nextends: default\n")
    assert_one_line_error(guard("update-signers", "--rules", str(bare)), 1, "no signer file")
