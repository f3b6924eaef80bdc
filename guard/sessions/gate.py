"""The request path's view of sessions: read the cookie (or a signed URL), write the cookie.

Everything here is arithmetic on headers and HMACs: no I/O. Whether a request may mint a
new session is the store's answer (see :meth:`guard.policy.engine.Guard.decide`); this
module only builds the token once it may.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from itsdangerous import BadSignature
from starlette.types import Scope

from guard.headers import request_headers
from guard.identity.address import Client
from guard.lru import LRU
from guard.policy.paths import normalise_path
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import MAX_TOKEN, Session, SessionCodec, SessionKeys, bind, binding_problem, network_tag
from guard.sessions.tokens import platform_of as platform_of

MAX_COOKIES = 4  # same-named cookies tried (a partitioned and an unpartitioned copy, ...)
# Cookie headers whose parse is remembered (first in, first out), and the longest kept: a
# scraper filling it holds at most about 32 MB (a header and its values), as the other caches.
COOKIE_LINES = 8192
MAX_COOKIE_LINE = 2048  # longer Cookie headers are parsed each time, never kept
VISITS = 16384  # (cookie values, client, platform) checks remembered
#: A valid token's session, why it does not belong to a client (None: it does), and it bound there.
Binding = tuple[Session, str | None, Session]


class Seen(NamedTuple):
    """A client's network tag and its cookie values checked against it (None: not valid), for one platform."""

    version: int  # the client's address, which the tag is of
    number: int
    family: int
    tag: str
    bindings: tuple[Binding | None, ...]


@dataclass(slots=True)
class Request:
    """The few request headers sessions look at, read once. Treat as read-only."""

    cookies: tuple[str, ...] = ()  # values of our cookie, in the order sent
    navigation: bool = False  # a browser loading a document (not a fetch, media or API call)
    https: bool = False
    same_origin: bool = False  # a page's own fetch (Sec-Fetch-Site: same-origin), e.g. a PWA's API call


@dataclass(slots=True)
class Reading:
    """A request's session as read: valid (and bound to this client), refused, or absent. Treat as read-only."""

    session: Session | None
    problem: str | None  # why a presented token was refused; None when valid or none sent
    changed: bool  # the token must be sent again (an empty network slot was filled)
    platform: str
    family: int
    tag: str
    signed_url: bool = False
    request: Request = field(default_factory=Request)
    now: float = 0.0
    lapsed: bool = False  # an expired session of this client's that had loaded a page

    @property
    def presented(self) -> bool:
        return self.session is not None or self.problem is not None


def read_request(scope: Scope, cookie_name: str, headers: Mapping[bytes, bytes] | None = None) -> Request:
    """Our cookie's values and whether this is a navigation, from an ASGI scope's headers
    (``headers``: as :func:`guard.headers.request_headers` reads them, if already read)."""
    if headers is None:
        headers = request_headers(scope)
    line = headers.get(b"cookie")
    return request_of(scope, headers, cookie_values(line, cookie_name) if line is not None else ())


def cookie_values(line: bytes, cookie_name: str) -> tuple[str, ...]:
    """The values of the cookie ``cookie_name`` in a Cookie header, in order (at most :data:`MAX_COOKIES`)."""
    values: list[str] = []
    prefix = cookie_name + "="
    for part in line.decode("latin-1").split(";"):
        part = part.strip()
        if part.startswith(prefix):
            values.append(part[len(prefix) :].strip('"'))
            if len(values) == MAX_COOKIES:
                break
    return tuple(values)


def request_of(scope: Scope, headers: Mapping[bytes, bytes], cookies: tuple[str, ...]) -> Request:
    """The :class:`Request` of a scope whose cookie values are already read."""
    fetch_mode = headers.get(b"sec-fetch-mode")
    if fetch_mode is not None:
        navigation = fetch_mode == b"navigate"
    else:  # Without Sec-Fetch-Mode (older browsers, simple clients) a document request asks for HTML.
        accept = headers.get(b"accept")
        navigation = bool(accept and b"text/html" in accept)
    navigation = navigation and scope.get("method", "GET") in ("GET", "HEAD")
    # A script of a page of this origin (one a service worker served, which the server never
    # saw load): what a browser sends with fetch(). Only ever upgrades an existing session.
    same_origin = fetch_mode in _FETCHES and headers.get(b"sec-fetch-site") == b"same-origin"
    return Request(cookies, navigation, scope.get("scheme") == "https", same_origin)


_FETCHES = (b"cors", b"same-origin")


class SessionGate:
    """Verifies and issues session tokens for one policy's settings."""

    def __init__(self, settings: SessionSettings, keys: SessionKeys, follow: bool = True) -> None:
        self.settings = settings
        self.keys = keys
        # Whether a session follows its listener to another network. Only where the store
        # counts a session's networks and budgets as one wherever it is used: on a Redis
        # Cluster it counts them per client network, and a cookie copied to another /16
        # would start afresh there, so the session stays on its network (see docs/sessions.md).
        self.follow = follow
        self.codec = SessionCodec(keys)
        self._urls = keys.signer("guard.url")
        # Cookie header -> our cookie's values in it: a browser sends the same header on every
        # request. Keyed on the whole header as sent; a long one is parsed each time instead.
        self._cookies: LRU[bytes, tuple[str, ...]] = LRU(COOKIE_LINES)
        self._visits: LRU[tuple[tuple[str, ...], str, str], Seen] = LRU(VISITS)

    def request(self, scope: Scope, headers: Mapping[bytes, bytes]) -> Request:
        """:func:`read_request`, with the Cookie header's parse remembered."""
        line = headers.get(b"cookie")
        if line is None:
            return request_of(scope, headers, ())
        cookies = self._cookies.peek(line)
        if cookies is None:
            cookies = cookie_values(line, self.settings.cookie.name)
            if len(line) <= MAX_COOKIE_LINE:
                self._cookies.put(line, cookies)
        return request_of(scope, headers, cookies)

    # -- reading ------------------------------------------------------------------------

    def read(
        self, request: Request, client: Client, user_agent: str | None, path: str, query: str, now: float
    ) -> Reading:
        """The request's session: from a signed URL for ``path``, else from the cookie."""
        s = self.settings
        platform = platform_of(user_agent)
        seen = self._seen(request.cookies, client, platform)
        family, tag = seen.family, seen.tag
        if query and s.url_param in query:
            session = self._from_url(path, query, now, platform, f"{family}:{tag}")
            if session is not None:
                return Reading(session, None, False, platform, family, tag, True, request, now)
        problem, lapsed = None, False
        for found in seen.bindings:
            if found is None:
                problem = problem or "the session cookie is not valid"
                continue
            session, wrong, bound = found
            if session.issued_at > now + 300:
                problem = "the session has expired"  # issued in the future: not a clock's skew
                continue
            ends = session.issued_at + s.ttl
            if ends <= now:
                paged = wrong is None and session.state != "fresh"
                if paged and now < ends + s.grace:
                    # Within its grace: renewed by this response, whatever the request (a tab
                    # left open overnight: the player's next Range request plays on).
                    return Reading(bound, None, True, platform, family, tag, False, request, now)
                problem = "the session has expired"
                # A browser back after a long time away: its next session need not start "fresh".
                lapsed = lapsed or paged
                continue
            if wrong is not None:
                problem = wrong
                continue
            return Reading(bound, None, bound is not session, platform, family, tag, False, request, now)
        return Reading(None, problem, False, platform, family, tag, False, request, now, lapsed)

    def _seen(self, cookies: tuple[str, ...], client: Client, platform: str) -> Seen:
        """The client's network and each cookie value checked against it and the platform.

        Remembered per (cookie values, client address, platform): none of it depends on
        the time (expiry is decided by the caller on every read), and the same cookie from
        another network or device is another key, checked afresh. Not kept when a value is
        too long to be a token (refused unread): every key stays small.
        """
        key = (cookies, client.ip, platform)
        found = self._visits.peek(key)
        if found is None or found.version != client.version or found.number != client.number:
            s = self.settings
            family, tag = network_tag(client.version, client.number, s.ipv4_prefix, s.ipv6_prefix)
            bindings = tuple(self._binding(token, family, tag, platform) for token in cookies)
            found = Seen(client.version, client.number, family, tag, bindings)
            if all(len(token) <= MAX_TOKEN for token in cookies):
                self._visits.put(key, found)
        return found

    def _binding(self, token: str, family: int, tag: str, platform: str) -> Binding | None:
        """The session in ``token``, why it does not belong to this network and platform (None:
        it does), and itself bound to the network; None when the token is not valid."""
        session = self.codec.loads(token)
        if session is None:
            return None
        wrong = binding_problem(session, platform, None if self.follow else (family, tag))
        return session, wrong, bind(session, family, tag) if wrong is None else session

    def _from_url(self, path: str, query: str, now: float, platform: str, network: str) -> Session | None:
        prefix = self.settings.url_param + "="
        for part in query.split("&"):
            if part.startswith(prefix):
                token = part[len(prefix) :]
                break
        else:
            return None
        if len(token) > MAX_TOKEN:
            return None
        try:
            payload = self._urls.unsign(token).decode("ascii")
        except (BadSignature, UnicodeDecodeError, ValueError):
            return None
        fields = payload.split("~")
        if len(fields) not in (4, 5, 6) or fields[0] != "1" or fields[3] != _path_tag(path):
            return None
        if not self.follow and len(fields) == 6 and fields[5] != network:
            return None  # a session that does not follow its listener: nor does its URL
        try:
            expires = float(fields[2])
            # The proof of the session it was made for; without one (an app's URL, signed at
            # login, which is the proof), until it expires.
            proven = min(float(int(fields[4])), expires) if len(fields) >= 5 else expires
        except ValueError:
            return None
        if expires <= now:
            return None
        return Session(fields[1], expires - self.settings.ttl, "page", proven, platform=platform)

    # -- writing ------------------------------------------------------------------------

    def outgoing(self, reading: Reading, minted: bool, group: str, navigation: bool, now: float) -> Session | None:
        """The session to send back with this response, or None (nothing changed)."""
        session = reading.session
        if session is None:
            if not minted:
                return None
            state = "page" if navigation or reading.lapsed else "fresh"
            return self.codec.new(now, reading.platform, reading.family, reading.tag, state=state)
        if reading.signed_url:
            return None
        s = self.settings
        issuing = group in s.issue
        changed = reading.changed
        if session.state == "fresh" and issuing and (navigation or reading.request.same_origin):
            # The browser loaded a page, or a page of this origin (served by a service worker)
            # made its own fetch: no longer "fresh". Never mints: a session must exist.
            session, changed = replace(session, state="page"), True
        age = now - session.issued_at
        if age >= s.ttl or (issuing and age > s.ttl / 2):
            # Past half its life on a page or API call, or past its end (within its grace) on
            # any request: renewed (same id, same budgets), so a listener who keeps using the
            # site, or a tab left open overnight, is never cut off mid-track.
            session, changed = replace(session, issued_at=float(int(now))), True
        return session if changed else None

    def set_cookie(self, session: Session, https: bool, now: float) -> bytes:
        """The Set-Cookie header value carrying ``session``."""
        c = self.settings.cookie
        # The session's life and its grace: the browser keeps sending an expired session that
        # can still be renewed (Max-Age equal to the life would drop it at its end); and a
        # second grace in which it still says this device had loaded a page ("lapsed").
        max_age = max(1, int(session.issued_at + self.settings.ttl + 2 * self.settings.grace - now))
        parts = [f"{c.name}={self.codec.dumps(session)}", f"Path={c.path}", f"Max-Age={max_age}"]
        cross_site = c.same_site.lower() == "none"
        if c.secure is True or cross_site or c.partitioned or (c.secure == "auto" and https):
            parts.append("Secure")
        if c.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={c.same_site}")
        if c.partitioned:
            parts.append("Partitioned")
        return "; ".join(parts).encode("latin-1")

    def sign_url(
        self, path: str, session_id: str, expires_at: float, proven_until: float | None = None, network: str = ""
    ) -> str:
        """``path`` with a signed, expiring ``guard_sig`` parameter standing in for a session.

        ``proven_until``: the session's proof (:attr:`Session.proven_until`), which the URL
        carries and no more; None: proven until it expires (an app's URL, signed at login).
        ``network``: the issuing client's (``"<family>:<tag>"`` of a :class:`Reading`), where
        the URL then plays only when sessions do not follow their listener (a Redis Cluster)."""
        tag = _path_tag(normalise_path(path))
        payload = f"1~{session_id}~{int(expires_at)}~{tag}"
        if proven_until is not None or network:
            payload += f"~{int(expires_at if proven_until is None else proven_until)}"
        if network:
            payload += f"~{network}"
        token = self._urls.sign(payload).decode("ascii")
        return f"{path}?{self.settings.url_param}={token}"


def _path_tag(path: str) -> str:
    digest = hashlib.blake2s(path.encode("utf-8", "surrogateescape"), digest_size=9).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")
