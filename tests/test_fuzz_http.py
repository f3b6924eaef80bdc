"""Fuzzing over real HTTP: nothing a client sends makes guard answer 5xx, raise, hang or grow.

Two servers run as their own processes on loopback, as an operator runs them: ``guard demo``
(the middleware in front of the demo platform: pages, audio with Range, the challenge
endpoint, the directive files, the metrics) and ``guard serve --forward-auth``. Hypothesis
builds raw HTTP/1.1 requests, written byte for byte on a socket so that any encoding gets
through: paths, query strings, headers, cookies, challenge answers, forward-auth headers and
Range headers as UTF-8, Latin-1, UTF-16, percent-encoded or raw bytes.

Each response must be under 500, in bounded time (``TIME_BOUND``: a hang or a blow-up, not a
speed target; ``bench/hostile.py`` measures speed), and neither server may log a traceback
(an exception reaching uvicorn, or one guard caught). The last test sends thousands of
distinct long headers and checks that each server's resident memory stays within the
caches' byte bounds. ``GUARD_FUZZ_EXAMPLES`` raises the number of examples for a longer run.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CHROME, GPTBOT, NAVIGATE, ROOT, free_port, wait_for_http

from guard.policy.engine import Guard
from guard.policy.rules import load_rules

EXAMPLES = int(os.environ.get("GUARD_FUZZ_EXAMPLES", "150"))
TIME_BOUND = 2.0  # seconds for one request: far above any real cost, far below a hang
MEMORY_BOUND_MIB = 16  # RSS growth under thousands of distinct long headers: the identity cache's 8 MiB, and slack
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples in every CI run; GUARD_FUZZ_EXAMPLES for more
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- the servers -------------------------------------------------------------------------------


class Server:
    """One guard server process on loopback, its log in a file."""

    def __init__(self, command: list[str], folder: Path, name: str) -> None:
        self.port = free_port()
        self.log = folder / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "GUARD_SESSION_KEY": "f" * 40,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "guard.ops.cli", *command, "--port", str(self.port), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=env,
        )
        wait_for_http(f"http://127.0.0.1:{self.port}/robots.txt", process=self.process)

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def tracebacks(self) -> str:
        text = self.log.read_text(errors="replace")
        return text if "Traceback" in text or "Exception in ASGI" in text else ""

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    folder = tmp_path_factory.mktemp("fuzz")
    rules = folder / "rules.yaml"
    rules.write_text("extends: default\nmetrics:\n  path: /metrics\n")
    demo = Server(["demo", "--rules", str(rules)], folder, "demo")
    try:
        auth = Server(
            ["serve", "--forward-auth", "--rules", str(rules), "--trusted-proxy", "127.0.0.1"], folder, "auth"
        )
    except BaseException:
        demo.stop()
        raise
    try:
        yield demo, auth
    finally:
        demo.stop()
        auth.stop()


@pytest.fixture(scope="module")
def challenge_token(servers) -> bytes:
    """A real challenge token of the demo, for answers in every encoding."""
    demo, _ = servers
    status, body = send(demo.port, b"/tracks/1/stream", [(b"user-agent", CHROME.encode()), *NAVIGATE_HEADERS])
    found = re.search(rb'"token": "([^"]+)"', body)
    assert status == 403 and found, body[:300]
    return found.group(1)


NAVIGATE_HEADERS = [(k.encode(), v.encode()) for k, v in NAVIGATE.items()]


def send(port: int, target: bytes, headers: list[tuple[bytes, bytes]], method: bytes = b"GET") -> tuple[int, bytes]:
    """One request written byte for byte; the status (0: the server closed without one) and body."""
    head = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    with socket.create_connection(("127.0.0.1", port), timeout=TIME_BOUND * 5) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    first, _, rest = response.partition(b"\r\n")
    parts = first.split(b" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, rest.partition(b"\r\n\r\n")[2]


# -- what a client can send ---------------------------------------------------------------------


def _encodings(text: str) -> st.SearchStrategy[bytes]:
    """``text`` as a client might put it on the wire."""
    forms = [text.encode("utf-8"), text.encode("utf-16-le", "surrogatepass")]
    if all(ord(c) < 256 for c in text):
        forms.append(text.encode("latin-1"))
    return st.sampled_from(forms)


#: Text in any encoding, or any bytes.
RAW = st.one_of(st.text(max_size=40).flatmap(_encodings), st.binary(max_size=40))
PIECES = [
    b"tracks", b"1", b"stream", b"api", b"..", b".", b"", b"%2F", b"%2e%2e", b"%00", b"%D9%A5", b"%C2%B2", b"%FF",
    b"robots.txt", b"ai.txt", b".guard", b"challenge", b"metrics", b"_guard", b"auth", b"nginx", b"healthz",
]  # fmt: skip


def _on_the_wire(raw: bytes, escape: bool) -> bytes:
    """Percent-encoded, or raw with only what would end the request line or header escaped."""
    if escape:
        return quote_from_bytes(raw, safe="/").encode()
    return bytes(b if b > 0x20 and b != 0x7F else 0x5F for b in raw)


SEGMENT = st.one_of(st.sampled_from(PIECES), st.tuples(RAW, st.booleans()).map(lambda p: _on_the_wire(*p)))
PATH = st.lists(SEGMENT, max_size=6).map(lambda parts: b"/" + b"/".join(parts))
QUERY = st.lists(
    st.tuples(st.one_of(st.sampled_from([b"t", b"n", b"next", b"wait", b"page"]), SEGMENT), SEGMENT), max_size=4
).map(lambda pairs: b"&".join(k + b"=" + v for k, v in pairs))


def _header_value(raw: bytes) -> bytes:
    return bytes(b for b in raw if b not in (0x0A, 0x0D, 0x00)).strip()


VALUE = st.one_of(
    RAW.map(_header_value),
    st.sampled_from([
        GPTBOT.encode(), CHROME.encode(), b"\xff\xfe", "Mozilla/5.0 (\u0662) GPT\u0392ot".encode(), b"x" * 9000,
        b"1.1.1.1, " * 500, b"[::1", b"for=unknown;by=_x", b"guard_session=" + b"A" * 500, b"guard_session=..;x",
        b'sig1=("@authority");tag="web-bot-auth"', b"*", b"http://music.example/tracks/1/stream",
    ]),
)  # fmt: skip
RANGE = st.one_of(
    st.sampled_from([b"bytes=0-99", b"bytes=-5", b"bytes=99999999999999999999999-", b"bytes=5-1", b"bytes=0-0,1-1"]),
    st.text(alphabet="bytes=0123456789-,\u0663\u00b2 ", max_size=30).map(lambda t: t.encode("utf-8")),
    RAW.map(_header_value),
)
NAMES = [
    b"user-agent", b"cookie", b"range", b"x-forwarded-for", b"forwarded", b"accept", b"sec-fetch-mode",
    b"signature", b"signature-input", b"signature-agent", b"x-forwarded-uri", b"x-forwarded-method",
    b"x-original-uri", b"x-original-method", b"x-forwarded-host", b"x-guard-status",
]  # fmt: skip
HEADER = st.one_of(
    st.tuples(st.sampled_from(NAMES), VALUE),
    st.tuples(st.just(b"range"), RANGE),
    st.tuples(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode), VALUE),
)
HEADERS = st.lists(HEADER, max_size=7)
METHOD = st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"PROPFIND", b"get"])


def judged(port: int, target: bytes, headers: list[tuple[bytes, bytes]], method: bytes = b"GET") -> int:
    start = time.perf_counter()
    status, body = send(port, target, headers, method)
    took = time.perf_counter() - start
    assert 0 < status < 500, (status, target, headers, body[:300])
    assert took < TIME_BOUND, (took, target, headers)
    return status


# -- the fuzz --------------------------------------------------------------------------------------


@FUZZ
@given(path=PATH, query=QUERY, headers=HEADERS, method=METHOD)
def test_the_middleware_never_errs_on_any_request(servers, path: bytes, query: bytes, headers, method: bytes) -> None:
    demo, _ = servers
    judged(demo.port, path + (b"?" + query if query else b""), headers, method)


@FUZZ
@given(
    answer=st.one_of(RAW, st.text(alphabet="0123456789\u0663\u00b2\uff11", max_size=25).map(str.encode)),
    next_=SEGMENT,
    escape=st.booleans(),
)
def test_the_challenge_endpoint_never_errs_on_any_answer(
    servers, challenge_token: bytes, answer: bytes, next_: bytes, escape: bool
) -> None:
    demo, _ = servers
    target = b"/.guard/challenge?t=" + challenge_token + b"&n=" + _on_the_wire(answer, escape) + b"&next=/" + next_
    headers = [(b"user-agent", CHROME.encode()), *NAVIGATE_HEADERS]
    assert judged(demo.port, target, headers) in (303, 400, 403)  # 400: the server refuses raw bytes in a target


@FUZZ
@given(
    endpoint=st.sampled_from([b"/_guard/nginx", b"/_guard/auth", b"/_guard/auth/tracks/1/stream"]),
    rest=PATH,
    uri=st.one_of(PATH, VALUE),
    method=st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST"]), VALUE),
    headers=HEADERS,
    user_agent=st.sampled_from([CHROME.encode(), GPTBOT.encode(), b""]),
    proxy_headers=st.booleans(),  # Envoy sends none: the path after /_guard/auth is the original
)
def test_forward_auth_never_errs_and_never_opens_to_gptbot(
    servers, endpoint: bytes, rest: bytes, uri: bytes, method: bytes, headers, user_agent: bytes, proxy_headers: bool
) -> None:
    _, auth = servers
    nginx = endpoint == b"/_guard/nginx"
    target = endpoint + (rest if endpoint == b"/_guard/auth/tracks/1/stream" else b"")
    asks = (
        [(b"x-original-uri", uri), (b"x-original-method", method)]
        if nginx
        else [(b"x-forwarded-uri", uri), (b"x-forwarded-method", method)]
    )
    sent = [(b"user-agent", user_agent), *(asks if proxy_headers else []), *headers]
    status = judged(auth.port, target, sent)
    if user_agent == GPTBOT.encode() and not any(k == b"user-agent" for k, _ in headers):
        # GPTBot is refused on every path, whatever the encoding, but the exempt ones (health, directives)
        assert status != 200 or _exempt(target, sent), (target, uri)


def _exempt(target: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether guard judges the original request of this auth request as an exempt path."""
    from urllib.parse import unquote

    from guard.forwardauth import NGINX_PATH, _after_prefix, original_request

    path = unquote(target.decode("latin-1"))
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": target, "query_string": b"", "headers": headers}
    nginx = path == NGINX_PATH
    original = original_request(scope, "" if nginx else _after_prefix(scope, path), nginx=nginx)
    guard = _judge()
    client = guard.resolver.resolve({"client": ("198.51.100.1", 1)})
    return guard.is_exempt(guard.facts(client, GPTBOT, original["path"]).where.group)


@functools.cache
def _judge() -> Guard:
    return Guard(load_rules(ROOT / "rules" / "default.yaml"))


def test_directives_and_metrics_answer(servers) -> None:
    demo, auth = servers
    for port in (demo.port, auth.port):
        for path in (b"/robots.txt", b"/ai.txt"):
            assert judged(port, path, []) == 200, path
        for path in (b"/license.xml", b"/.well-known/tdmrep.json", b"/robots.txt?%FF", b"/ai.txt/.."):
            judged(port, path, [(b"user-agent", b"\xff" * 100)])  # whatever the rules publish: never a 5xx
    assert judged(demo.port, b"/metrics", []) == 200


def test_no_traceback_in_either_server(servers) -> None:
    """Run after the fuzz (tests run in file order): nothing reached uvicorn, nothing was caught."""
    demo, auth = servers
    assert not demo.tracebacks(), demo.tracebacks()[-3000:]
    assert not auth.tracebacks(), auth.tracebacks()[-3000:]


def test_distinct_long_headers_keep_memory_within_the_bounds(servers) -> None:
    """Thousands of distinct long User-Agents, X-Forwarded-For chains, cookies and paths."""
    demo, auth = servers
    before = demo.rss_mib(), auth.rss_mib()
    filler = b"Mozilla/5.0 (X11; Linux x86_64) " * 440  # 14 KB: uvicorn's h11 takes 16 KB of headers
    for n in range(2000):
        tag = b"%08d" % n
        headers = [(b"user-agent", tag + filler + tag), (b"cookie", b"guard_session=" + tag * 60)]
        judged(demo.port, b"/tracks/" + tag + b"/" + b"x" * 600, headers)
        chain = b", ".join(b"10.%d.%d.1" % (n >> 8 & 255, n & 255) for _ in range(60))
        judged(auth.port, b"/_guard/nginx", [(b"x-original-uri", b"/" + tag), (b"x-forwarded-for", chain), *headers])
    grown = demo.rss_mib() - before[0], auth.rss_mib() - before[1]
    print(f"RSS grew {grown[0]:.1f} MiB (demo), {grown[1]:.1f} MiB (forward-auth)")
    assert max(grown) < MEMORY_BOUND_MIB, f"RSS grew {grown[0]:.0f} MiB (demo), {grown[1]:.0f} MiB (forward-auth)"
    assert not demo.tracebacks() and not auth.tracebacks()
