"""Browser-like listeners for the benchmarks: the shipped rules with sessions on, and the
requests a browser that keeps its session cookie makes.

* :func:`rules_file` writes a rules file that ``extends: default`` with the sessions block
  and the challenge rules of docs/sessions.md (the shipped rules now have them too: the
  same ids replace theirs in place, and the block pins the session key to
  ``$GUARD_SESSION_KEY``).
* :func:`address` spreads listeners over many /24 subnets, as the throughput load does.
* :func:`harvest_cookies` loads a track page once per listener, in process, and keeps the
  session cookie each one was given (the key is ``$GUARD_SESSION_KEY``, shared with the
  servers the throughput bench starts, so the cookies are valid there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from guard.testing import http_scope, status_and_cookie

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
#: A fixed key for benchmark runs only: every process the benchmark starts verifies the same cookies.
BENCH_SESSION_KEY = "bench-only-session-key-0123456789abcdefghij"
NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"sec-fetch-dest", b"document"), (b"accept", b"text/html")]
FETCH = [(b"sec-fetch-mode", b"cors"), (b"sec-fetch-dest", b"empty"), (b"accept", b"application/json")]
MEDIA = [(b"sec-fetch-mode", b"no-cors"), (b"sec-fetch-dest", b"audio"), (b"range", b"bytes=0-4095")]

RULES = """\
version: 1
extends: default
sessions:
  issue: [pages, content_api]
  require: [audio]
  ttl: 1d
  ipv4: 24
  ipv6: 48
  mint_per_address: {requests: 30, per: 1h, burst: 30}
  mint_per_subnet: {requests: 300, per: 1h, burst: 100}
  cookie: {name: guard_session, http_only: true, secure: auto, same_site: Lax, partitioned: false}
  challenge: {difficulty: 16, ttl: 5m, fallback: true, wait: 10s, proof_ttl: 1d}
  url_param: guard_sig
  key_env: GUARD_SESSION_KEY
rules:
  - id: session-tracks-soft
    after: no-user-agent
    match: {path: [audio, content_api, pages]}
    limit: {key: session, distinct: track, max: 120, per: 1h}
    action: challenge
  - id: hosting-browser
    after: no-user-agent
    match: {category: unknown, network: hosting, path: [audio, content_api, pages]}
    action: challenge
  - id: fresh-session-audio
    after: no-user-agent
    match: {path: audio, session: fresh}
    action: challenge
"""


def rules_file(folder: str | None = None) -> Path:
    """The benchmark's rules: the shipped ones with sessions on (written to a temporary folder)."""
    path = Path(folder or tempfile.mkdtemp(prefix="guard-bench-")) / "rules.yaml"
    path.write_text(RULES)
    return path


def address(c: int) -> str:
    """Listener ``c``'s address: 2,000 listeners are 2,000 different /24 subnets (as wrk_clients.lua),
    in 100.64.0.0/10 (carrier-grade NAT space: no hosting provider's published ranges)."""
    return f"100.{c % 50 + 64}.{c // 50 % 250 + 1}.{c // 12500 % 250 + 1}"


def proxied(path: str, c: int, extra: list[tuple[bytes, bytes]], cookie: bytes | None = None) -> dict:
    """An ASGI scope for listener ``c``'s request through the trusted proxy on loopback."""
    headers = [
        (b"host", b"music.example"),
        (b"user-agent", CHROME.encode()),
        (b"x-forwarded-for", address(c).encode()),
        *extra,
    ]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return http_scope(path, "127.0.0.1", headers)


call = status_and_cookie  # guard.testing's


async def harvest_cookies(app, clients: int) -> list[bytes]:
    """``name=token`` of the session each listener gets from its first track page."""
    cookies = []
    for c in range(clients):
        status, cookie = await call(app, proxied(f"/tracks/{c + 1}", c, NAVIGATE))
        if status != 200 or cookie is None:
            raise RuntimeError(f"listener {c}: page load gave {status} without a session cookie")
        cookies.append(cookie.split(b";", 1)[0])
    return cookies
