"""Forward-auth: guard as the auth service of a reverse proxy, for sites that are not Python.

``guard serve --forward-auth`` answers the subrequests of nginx ``auth_request``, Traefik
ForwardAuth, Caddy ``forward_auth`` and Envoy ``ext_authz`` (HTTP service). For each one
it rebuilds the original request from the headers the proxy sets, runs it through the
same :class:`~guard.middleware.GuardMiddleware` as a Python site would, and answers:

* **200** to allow, with the response signals (``Content-Usage``, ``X-Robots-Tag``, ...)
  as headers for the proxy to add to the response;
* the denial itself otherwise (403, 429 with ``Retry-After``, 402 or 401 from the consent
  rules), with the reason as the body and in ``X-Guard-Reason``. Traefik, Caddy and Envoy
  relay it as it is. nginx only relays 401 and 403 from an auth subrequest, so on
  ``/_guard/nginx`` every denial is a 403 (401 stays 401) that carries the real status in
  ``X-Guard-Status`` for the proxy's ``error_page`` to return.

The original request comes from ``X-Original-Method``/``X-Original-URI`` on the nginx
endpoint (as configured), and on the other from ``X-Forwarded-Method``/``X-Forwarded-Uri``
(Traefik, Caddy), else the auth request's own method and the path after the auth prefix
(Envoy's ``path_prefix``). Each endpoint reads only the headers its proxies set.
The client is the socket peer unless that peer is a trusted proxy, as everywhere in guard:
only trusted proxies may ask, and their ``X-Forwarded-For`` names the client. The
directive files (``/robots.txt``, ``/ai.txt``, ...) are served on their own paths for the
proxy to route to guard.

Nothing a client sends makes guard answer a 5xx here, which some proxies (Envoy with
``failure_mode_allow``) would take as "let it through". A request whose original URI is
not a path (``*``, no leading slash) is refused with 400; any other error inside guard
refuses the request (403, reason ``guard could not check this request``) unless the
operator chose ``fail_open`` (``guard serve --fail-open``), which allows it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from starlette.types import Message, Receive, Scope, Send

from guard.identity.address import Networks
from guard.middleware import GuardMiddleware
from guard.policy.rules import Policy
from guard.responses import respond

log = logging.getLogger("guard")
#: Auth endpoint answering with the real statuses (Traefik, Caddy, Envoy ``path_prefix``).
AUTH_PATH = "/_guard/auth"
#: Auth endpoint for nginx ``auth_request``: denials are 403 (or 401) with ``X-Guard-Status``.
NGINX_PATH = "/_guard/nginx"
#: Request headers that describe the auth subrequest itself, not the original request.
DROPPED = frozenset(
    {
        b"x-original-method",
        b"x-original-uri",
        b"x-forwarded-method",
        b"x-forwarded-uri",
        b"content-length",
        b"transfer-encoding",
    }
)
FORWARDED_AUTH_KEY = "guard.forward_auth"
#: The reason a request is refused when guard itself fails (and ``fail_open`` is off).
FAILED_CLOSED = "guard could not check this request"


class Unmappable(ValueError):
    """The original request's URI is not a path guard can judge (answered with 400)."""


async def _application(scope: Scope, receive: Receive, send: Send) -> None:
    """What stands behind the guard here: "allowed" for an auth subrequest, 404 for anything else."""
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope.get(FORWARDED_AUTH_KEY):
        await respond(send, 200, b"", head=True)
    else:
        body = f"404 Not Found: guard forward-auth answers {AUTH_PATH}, {NGINX_PATH} and the directive files.\n"
        await respond(send, 404, body.encode())


class ForwardAuth:
    """ASGI app answering forward-auth subrequests with guard's decision.

    :param rules: rules file or loaded :class:`~guard.policy.rules.Policy` (default: shipped).
    :param trusted_proxies: CIDRs of the proxies allowed to ask; their ``X-Forwarded-For``
        (the rules' ``forwarded_header``) names the client. Other peers get a 403.
    :param options: passed on to :class:`~guard.middleware.GuardMiddleware` (``redis_url``,
        ``store``, ``clock``, ...).
    :param fail_open: when guard itself fails on a request, allow it (200) instead of
        refusing it (403): the site stays open while guard errs. Off by default.
    """

    def __init__(
        self,
        rules: str | Path | Policy | None = None,
        *,
        trusted_proxies: Iterable[str] = (),
        fail_open: bool = False,
        **options: Any,
    ) -> None:
        proxies = list(trusted_proxies)
        self.proxies = Networks(proxies)
        self.fail_open = fail_open
        self.middleware = GuardMiddleware(_application, rules, trusted_proxies=proxies, **options)
        self.middleware.fail_open = fail_open  # else its errors come here, to be refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.middleware(scope, receive, send)
            return
        path = scope.get("path", "")
        nginx = path == NGINX_PATH
        asks = nginx or path == AUTH_PATH or path.startswith(AUTH_PATH + "/")
        watched = _Watched(send)  # what the server got; a denial is held by _Denial until complete
        answer = _for_nginx(watched) if nginx else _with_reason(watched) if asks else watched
        try:
            await self._answer(scope, receive, answer, path, nginx, asks)
        except Exception:
            if watched.started:  # too late to answer otherwise
                log.exception("guard: error after forward-auth began its answer")
                return
            opened = self.fail_open and asks
            log.exception("guard: error in a forward-auth request; %s", "allowing it" if opened else "refusing it")
            if opened:
                await respond(answer, 200, b"", head=True)
            else:
                reason = FAILED_CLOSED.encode()
                await respond(answer, 403, b"403 Forbidden: " + reason + b"\n", extra=[(b"x-guard-reason", reason)])

    async def _answer(self, scope: Scope, receive: Receive, send: Send, path: str, nginx: bool, asks: bool) -> None:
        if not asks:
            await self.middleware(scope, receive, send)  # the directive files, metrics; else 404
            return
        peer = scope.get("client")
        if not (peer and isinstance(peer[0], str) and self.proxies.contains_text(peer[0])):
            body = b"403 Forbidden: forward-auth answers only the trusted proxies (--trusted-proxy).\n"
            await respond(send, 403, body, extra=[(b"x-guard-reason", b"not a trusted proxy")])
            return
        try:
            original = original_request(scope, _after_prefix(scope, path) if not nginx else "", nginx=nginx)
        except Unmappable as problem:
            reason = str(problem).encode()
            await respond(send, 400, b"400 Bad Request: " + reason + b"\n", extra=[(b"x-guard-reason", reason)])
            return
        await self.middleware(original, _empty_body, send)


class _Watched:
    """A ``send`` that remembers whether the response has begun."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = True
        await self.send(message)


def _after_prefix(scope: Scope, path: str) -> str:
    """The original path after ``/_guard/auth`` (Envoy's ``path_prefix``), percent-encoded as it came.

    Read from the raw bytes the server received when they carry the prefix as is: the
    decoded path may hold any character, which no header can carry.
    """
    raw = scope.get("raw_path")
    prefix = AUTH_PATH.encode()
    if isinstance(raw, bytes) and raw.startswith(prefix):
        return raw[len(prefix) :].decode("latin-1")
    return quote(path[len(AUTH_PATH) :], safe="/:@!$&'()*+,;=-._~")


def original_request(scope: Scope, rest: str, *, nginx: bool = False) -> Scope:
    """The scope of the request the proxy asks about, from the headers it set (see the module doc).

    Only the pair of headers the asking proxy sets is read: nginx's ``X-Original-*`` on
    the nginx endpoint, ``X-Forwarded-*`` on the other. Traefik and Caddy copy the client's
    own headers into the auth request, so an ``X-Original-URI`` the client added must not
    outrank the ``X-Forwarded-Uri`` the proxy set.
    """
    headers: dict[bytes, bytes] = {}
    for key, value in scope.get("headers", ()):
        headers.setdefault(key, value)
    method_header, uri_header = (
        (b"x-original-method", b"x-original-uri") if nginx else (b"x-forwarded-method", b"x-forwarded-uri")
    )
    method = headers.get(method_header) or scope["method"].encode("latin-1", "replace")
    uri = headers.get(uri_header)
    if uri is None:
        query = scope.get("query_string", b"")
        uri = (rest or "/").encode("latin-1") + (b"?" + query if query else b"")
    raw_path = _origin_path(uri)
    raw_path, _, query_string = raw_path.partition(b"?")
    kept = [(k, v) for k, v in scope.get("headers", ()) if k not in DROPPED]
    forwarded_host = headers.get(b"x-forwarded-host")
    if forwarded_host:
        kept = [(k, v) for k, v in kept if k != b"host"] + [(b"host", forwarded_host)]
    return {
        **scope,
        "method": method.decode("latin-1").upper(),
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": kept,
        FORWARDED_AUTH_KEY: True,
    }


def _origin_path(uri: bytes) -> bytes:
    """The path and query of the original URI; an absolute URI (``http://host/p``) gives its path.

    Anything else (``*``, ``tracks/1``, nothing) is not a path the site would serve as
    guard judged it: :class:`Unmappable`.
    """
    if uri.startswith(b"/"):
        return uri
    scheme, sep, rest = uri.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        slash = rest.find(b"/")
        if slash >= 0:
            return rest[slash:]
        query = rest.find(b"?")
        return b"/" + (rest[query:] if query >= 0 else b"")
    raise Unmappable("the original URI is not a path")


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _with_reason(send: Send) -> Send:
    """A denial keeps its status and body, and repeats its reason in ``X-Guard-Reason``."""
    return _Denial(send, nginx=False)


def _for_nginx(send: Send) -> Send:
    """Denials become 403 (401 stays) with the real status in ``X-Guard-Status``: nginx relays only those."""
    return _Denial(send, nginx=True)


class _Denial:
    """Holds a non-2xx response start until its body names the reason, then sends both."""

    def __init__(self, send: Send, *, nginx: bool) -> None:
        self.send = send
        self.nginx = nginx
        self.start: Message | None = None
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 300:
            self.start = message
            return
        if self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        status = self.start["status"]
        headers = [(k, v) for k, v in self.start.get("headers", ()) if k != b"content-length"]
        if not any(k == b"x-guard-reason" for k, _ in headers):  # a challenge page names its own
            reason = self.body.decode("utf-8", "replace").strip().splitlines()[0] if self.body.strip() else str(status)
            headers.append((b"x-guard-reason", reason[:300].encode("latin-1", "replace")))
        headers += [(b"x-guard-status", str(status).encode()), (b"content-length", str(len(self.body)).encode())]
        sent = status if not self.nginx or status in (401, 403) else 403
        await self.send({**self.start, "status": sent, "headers": headers})
        await self.send({"type": "http.response.body", "body": self.body})


def app_from_env() -> ForwardAuth:
    """The forward-auth app (a uvicorn factory) configured from the environment.

    GUARD_RULES, GUARD_REDIS_URL, GUARD_TRUSTED_PROXIES, and GUARD_FAIL_OPEN (``1``: allow
    a request when guard itself fails on it).
    """
    import os

    rules = os.environ.get("GUARD_RULES") or None
    proxies = [p for p in os.environ.get("GUARD_TRUSTED_PROXIES", "").replace(",", " ").split() if p]
    return ForwardAuth(
        rules,
        trusted_proxies=proxies,
        fail_open=os.environ.get("GUARD_FAIL_OPEN", "").strip().lower() in ("1", "true", "yes"),
        redis_url=os.environ.get("GUARD_REDIS_URL") or None,
        tune_gc=True,  # a server of its own: see guard.ops.collector
    )
