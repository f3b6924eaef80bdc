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
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.types import Message, Receive, Scope, Send

from guard.identity.address import Networks
from guard.middleware import GuardMiddleware
from guard.policy.rules import Policy
from guard.responses import respond

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
    """

    def __init__(
        self, rules: str | Path | Policy | None = None, *, trusted_proxies: Iterable[str] = (), **options: Any
    ) -> None:
        proxies = list(trusted_proxies)
        self.proxies = Networks(proxies)
        self.middleware = GuardMiddleware(_application, rules, trusted_proxies=proxies, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        nginx = path == NGINX_PATH
        if not (nginx or path == AUTH_PATH or path.startswith(AUTH_PATH + "/")):
            await self.middleware(scope, receive, send)  # the directive files, metrics; else 404
            return
        peer = scope.get("client")
        if not (peer and isinstance(peer[0], str) and self.proxies.contains_text(peer[0])):
            body = b"403 Forbidden: forward-auth answers only the trusted proxies (--trusted-proxy).\n"
            await respond(send, 403, body, extra=[(b"x-guard-reason", b"not a trusted proxy")])
            return
        original = original_request(scope, path[len(AUTH_PATH) :] if not nginx else "", nginx=nginx)
        await self.middleware(original, _empty_body, _for_nginx(send) if nginx else _with_reason(send))


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
    method = headers.get(method_header) or scope["method"].encode()
    uri = headers.get(uri_header)
    if uri is None:
        query = scope.get("query_string", b"")
        uri = (rest or "/").encode("latin-1") + (b"?" + query if query else b"")
    raw_path, _, query_string = uri.partition(b"?")
    if not raw_path.startswith(b"/"):
        raw_path = b"/" + raw_path
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
    """The forward-auth app configured from GUARD_RULES, GUARD_REDIS_URL, GUARD_TRUSTED_PROXIES (uvicorn factory)."""
    import os

    rules = os.environ.get("GUARD_RULES") or None
    proxies = [p for p in os.environ.get("GUARD_TRUSTED_PROXIES", "").replace(",", " ").split() if p]
    return ForwardAuth(
        rules,
        trusted_proxies=proxies,
        redis_url=os.environ.get("GUARD_REDIS_URL") or None,
        tune_gc=True,  # a server of its own: see guard.ops.collector
    )
