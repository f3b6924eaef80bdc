"""Start-up under a real uvicorn: a bad rules file stops the server, workers, the decision log.

Each app module is written to a temporary directory and served by ``python -m uvicorn``
from there, the way a user's project runs it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import CHROME, GPTBOT, ROOT, RULES, FakeClock, Visitor, free_port, run, wait_for_http

from guard.demo.app import create_app
from guard.startup import warn_if_counters_split, worker_count
from guard.stores.memory import MemoryStore

BAD_RULES = f"""\
version: 1
catalogue: {RULES.parent / "agents.yaml"}
paths:
  pages: [/]
rules:
  - id: x
    action: explode
"""

HOME = """\
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guard import GuardMiddleware, load_rules


async def home(request):
    return PlainTextResponse("hello")


routes = [Route("/", home)]
"""

MOUNTINGS = {
    "added": "app = Starlette(routes=routes)\napp.add_middleware(GuardMiddleware, rules='bad.yaml')\n",
    "listed": "app = Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, rules='bad.yaml')])\n",
    "wrapped": "app = GuardMiddleware(Starlette(routes=routes), rules='bad.yaml')\n",
    "loaded": "app = GuardMiddleware(Starlette(routes=routes), rules=load_rules('bad.yaml'))\n",
}


def uvicorn(folder: Path, module: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(free_port()), *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """Wait for ``process`` to exit (a server stopped, or one that refused to start); its stdout, stderr."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"uvicorn did not exit in {timeout} s:\n{err}")


def test_a_bad_rules_file_stops_uvicorn_under_every_way_of_mounting(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_RULES)
    for name, mounting in MOUNTINGS.items():
        (tmp_path / f"{name}.py").write_text(HOME + mounting)
    servers = {name: uvicorn(tmp_path, name) for name in MOUNTINGS}  # side by side: one wait for all
    for name, process in servers.items():
        _, err = finish(process)
        assert process.returncode != 0, f"{name}: exited 0\n{err}"
        assert "bad.yaml:7:13: rule 'x': action: 'explode' is not one of: allow, block, throttle or challenge" in err, (
            f"{name}:\n{err}"
        )
        assert "Application startup complete" not in err, name


@pytest.mark.parametrize("mounting", ["added", "wrapped"])
def test_the_lifespan_failure_reads_as_one_message_for_both_forms_the_docs_show(tmp_path: Path, mounting: str) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_RULES)
    (tmp_path / "app.py").write_text(HOME + MOUNTINGS[mounting])
    process = uvicorn(tmp_path, "app")
    _, err = finish(process)
    assert process.returncode == 3  # uvicorn's "startup failed"
    assert "guard: the rules did not load: bad.yaml:7:13: rule 'x'" in err
    assert "Traceback" not in err
    assert "appears unsupported" not in err


def test_outside_a_server_a_bad_rules_file_raises_at_once(tmp_path: Path) -> None:
    from starlette.applications import Starlette

    from guard import GuardMiddleware
    from guard.errors import ConfigError

    (tmp_path / "bad.yaml").write_text(BAD_RULES)
    with pytest.raises(ConfigError, match="'explode' is not one of"):
        GuardMiddleware(Starlette(), rules=tmp_path / "bad.yaml")


def test_the_decision_log_appears_with_the_shipped_log_config_and_logs_numbers_as_numbers(tmp_path: Path) -> None:
    (tmp_path / "webapp.py").write_text(HOME + "app = Starlette(routes=routes)\napp.add_middleware(GuardMiddleware)\n")
    process = uvicorn(tmp_path, "webapp", "--log-config", str(ROOT / "deploy" / "logging.json"))
    try:
        base = _base_url(process)
        wait_for_http(base + "/robots.txt", process=process)
        assert httpx.get(base + "/", headers={"user-agent": GPTBOT}).status_code == 403
    finally:
        process.send_signal(signal.SIGINT)
    out, err = finish(process)
    decisions = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [d["rule"] for d in decisions] == ["ai-training"], out + err
    assert "GET / HTTP/1.1" in err  # uvicorn's own access log still goes to stderr


def _base_url(process: subprocess.Popen) -> str:
    argv = process.args
    assert isinstance(argv, list)
    return f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"


def test_retry_after_is_logged_as_a_number(policy, caplog) -> None:
    app = create_app(policy, clock=FakeClock())
    caplog.set_level(logging.INFO, logger="guard.decisions")
    scraper = Visitor(app, "198.51.100.60", CHROME)

    async def main() -> list[int]:
        return [(await scraper.get(f"/api/tracks/{t}")).status_code for t in range(1, 61)]

    assert 429 in run(main())
    throttled = [json.loads(r.getMessage()) for r in caplog.records if r.name == "guard.decisions"]
    assert throttled and all(type(line["retry_after"]) is int and line["retry_after"] >= 1 for line in throttled)


@pytest.mark.parametrize(
    ("argv", "environ", "workers"),
    [
        (["/usr/bin/uvicorn", "site:app", "--workers", "4"], {}, 4),
        (["/venv/lib/python3.11/site-packages/uvicorn/__main__.py", "site:app", "--workers=3"], {}, 3),
        (["/usr/bin/gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "site:app"], {}, 2),
        (["/usr/bin/gunicorn", "-w8", "site:app"], {}, 8),
        (["/srv/site/manage.py", "--workers", "9"], {}, 1),  # not a server we know: its flag means anything
        (["/usr/bin/uvicorn", "site:app"], {"WEB_CONCURRENCY": "5"}, 5),
        (["/usr/bin/uvicorn", "site:app"], {}, 1),
    ],
)
def test_worker_count_reads_the_server_command_line(argv: list[str], environ: dict[str, str], workers: int) -> None:
    assert worker_count(argv, environ) == workers


def test_the_memory_store_in_several_workers_warns_loudly(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="guard")
    assert warn_if_counters_split(MemoryStore(), workers=4)
    assert "4 worker processes" in caplog.text and "redis_url" in caplog.text
    assert not warn_if_counters_split(MemoryStore(), workers=1)
    assert not warn_if_counters_split(object(), workers=4)  # a shared store: nothing to say


def test_uvicorn_workers_on_the_memory_store_print_the_warning(tmp_path: Path) -> None:
    (tmp_path / "webapp.py").write_text(HOME + "app = Starlette(routes=routes)\napp.add_middleware(GuardMiddleware)\n")
    process = uvicorn(tmp_path, "webapp", "--workers", "2")
    try:
        wait_for_http(_base_url(process) + "/robots.txt", process=process)
    finally:
        process.send_signal(signal.SIGINT)
    _, err = finish(process)
    assert "the memory store counts in this process only, and this server runs 2 worker processes" in err
