"""Throwaway processes on loopback for tests, benchmarks and load tests.

A redis-server (or a three-master cluster) on a free port, the guarded demo under uvicorn,
and the small waits they need. Nothing here is used by the middleware itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers (server start-up), failing early if ``process`` died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def http_scope(
    path: str, client: str, headers: list[tuple[bytes, bytes]], *, scheme: str = "http", port: int = 8000
) -> dict:
    """An ASGI HTTP scope for a GET of ``path`` from ``client``, for driving an app in process."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", port),
    }


async def status_and_cookie(app, scope: dict) -> tuple[int, bytes | None]:
    """The status and the Set-Cookie of one request to ``app``, called in process (the body is dropped)."""
    out: list = [0, None]
    asked: list[bool] = []

    async def receive() -> dict:
        if asked:  # a streaming response listens for a disconnect: there is none
            await asyncio.Event().wait()
        asked.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out[0] = message["status"]
            out[1] = next((v for k, v in message.get("headers", ()) if k == b"set-cookie"), None)

    await app(scope, receive, send)
    return out[0], out[1]


@contextmanager
def demo_process(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``guard demo`` on a free loopback port for the duration of the block; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "guard.ops.cli", "demo", "--port", str(port), "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz", process=process)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_binary(name: str = "redis-server") -> str:
    """Path of a Redis binary. Missing is an error, never a skip: scripts/test installs it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run the tests with `bash scripts/test`, which installs it")
    return path


class RedisServer:
    """One redis-server process that a test can start, kill, pause and restart on the same port."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.extra = extra
        self.dir = tempfile.mkdtemp(prefix="guard-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--logfile",
                os.path.join(self.dir, "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.log()}")
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: the process is gone at once, connections drop."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""


def free_cluster_port() -> int:
    """A port P with P and its cluster bus port P + 10000 both free (P <= 55535)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """Three masters with cluster-enabled, joined with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        self.nodes = [RedisServer(*options, port=free_cluster_port()) for _ in range(masters)]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [redis_binary("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = self.nodes[0].client().execute_command("CLUSTER", "INFO").decode()
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.05)
        raise TimeoutError("the cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextmanager
def served(app, *, port: int | None = None) -> Iterator[tuple[str, object]]:
    """An ASGI app under uvicorn in a thread on loopback; yields its base URL and event loop.

    For tests that need real HTTP and still hold the app's objects (its clock, its consent
    registry): the loop lets them run a coroutine there (``run_coroutine_threadsafe``).
    """
    import asyncio
    import threading

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loops.append(loop)
        loop.run_until_complete(server.serve())
        pending = asyncio.all_tasks(loop)  # the app's background tasks end with the server
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield base, loops[0]
    finally:
        server.should_exit = True
        thread.join(timeout=20)
