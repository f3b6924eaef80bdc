"""Start-up: a bad rules file stops the server, and a memory store split across workers is said out loud.

Starlette and FastAPI build their middleware lazily, inside the server's first ASGI call
(the lifespan startup), and uvicorn takes any exception raised there for "lifespan
unsupported" and serves on. So when :class:`~guard.middleware.GuardMiddleware` is built
inside a running server and its rules do not load, it does not raise: it answers the
lifespan startup with ``lifespan.startup.failed`` and the ``file:line: reason`` message,
and the server prints it and exits. Built at the import of a module that a server was
started to serve (``app = GuardMiddleware(app, rules=...)`` under ``uvicorn module:app``),
it does the same, so both ways of mounting fail with the same one line and no traceback.
Built anywhere else (a script, a test), it raises :class:`~guard.errors.ConfigError` at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from starlette.types import Receive, Scope, Send

log = logging.getLogger("guard")

#: Servers whose ``--workers``/``-w`` is a count of worker processes, each with its own copy of the app.
SERVERS = frozenset({"uvicorn", "gunicorn", "hypercorn", "granian"})


def inside_a_running_server() -> bool:
    """Whether this code runs inside an event loop (a server building its app), not at plain import."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def refuse(error: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer for a middleware whose rules did not load: the lifespan startup fails, HTTP gets a 500."""
    message = f"guard: the rules did not load: {error}"
    if scope["type"] == "lifespan":
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": message})
        else:
            await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        log.error(message)
        body = b"500 Internal Server Error: the site's request guard is misconfigured.\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1011})


def under_a_server(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is an ASGI server's (uvicorn, gunicorn, ...), from its command line."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]) if argv else Path()
    return bool({program.stem, program.parent.name} & SERVERS)  # /usr/bin/gunicorn, .../uvicorn/__main__.py


def worker_count(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """How many worker processes the server that runs this process starts, as far as can be told.

    Read from the server's command line (``--workers N``, ``-w N``: uvicorn's spawned workers
    and gunicorn's forked ones keep the parent's ``sys.argv``) and ``WEB_CONCURRENCY``.
    A server started from Python code with ``workers=N`` is not seen.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    counts = [1]
    concurrency = environ.get("WEB_CONCURRENCY", "")
    if concurrency.isdigit():
        counts.append(int(concurrency))
    if under_a_server(argv):
        for i, token in enumerate(argv[1:], 1):
            value = None
            if token in ("--workers", "-w") and i + 1 < len(argv):
                value = argv[i + 1]
            elif token.startswith("--workers="):
                value = token.split("=", 1)[1]
            elif token.startswith("-w") and token[2:].isdigit():
                value = token[2:]
            if value is not None and value.isdigit():
                counts.append(int(value))
    return max(counts)


def warn_if_counters_split(store: object, workers: int | None = None) -> bool:
    """Log a warning when the memory store runs in one of several worker processes; True if it did."""
    from guard.stores.memory import MemoryStore

    workers = worker_count() if workers is None else workers
    if workers <= 1 or not isinstance(store, MemoryStore):
        return False
    log.warning(
        "guard: WARNING: the memory store counts in this process only, and this server runs %d worker "
        "processes: each allows the full limits, %d times in all. Give redis_url (or the rules' redis.url) "
        "to share the counters; see docs/redis.md.",
        workers,
        workers,
    )
    return True
