"""The way in for the platform's own apps and for clients that keep no cookies.

* :func:`issue_token`: the app's backend calls it at login and hands the token to the
  app, which sends it as the session cookie on every request
  (``Cookie: guard_session=<token>``).
* :func:`sign_stream_url`: a stream URL that carries its own expiring signature, for
  players that cannot send cookies or headers (cast receivers, smart speakers).

Both sign with the same keys as the guard: in the app's process, load them with
``SessionKeys.from_env()`` (or ``from_file``) from the same secret.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from guard.identity.address import parse_ip
from guard.sessions.gate import SessionGate
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import Session, SessionCodec, SessionKeys, bind, network_tag, platform_of


def issue_token(
    keys: SessionKeys,
    user_agent: str | None,
    client_ip: str | None = None,
    *,
    now: float,
    proven: bool = True,
    settings: SessionSettings | None = None,
) -> str:
    """A signed session token for a logged-in app.

    It is bound to the platform family of ``user_agent`` (the app's player's User-Agent)
    and, when ``client_ip`` is given, to that address's network; without it, the first
    request from each address family binds it. ``proven`` spares it challenges for the
    challenge's ``proof_ttl`` (the login was the proof). It expires with the session ``ttl``.
    """
    settings = settings or SessionSettings()
    platform = platform_of(user_agent)
    session = Session(secrets.token_urlsafe(16), float(int(now)), "page", platform=platform)
    parsed = parse_ip(client_ip) if client_ip else None
    if parsed is not None:
        session = bind(session, *network_tag(*parsed, settings.ipv4_prefix, settings.ipv6_prefix))
    if proven:
        session = replace(session, proven_until=float(int(now + settings.challenge.proof_ttl)))
    return SessionCodec(keys).dumps(session)


def sign_stream_url(
    keys: SessionKeys,
    path: str,
    session_id: str,
    *,
    expires_at: float,
    settings: SessionSettings | None = None,
) -> str:
    """``path`` (no query) with a signature valid until ``expires_at``, for one listener.

    Requests for that path with the signature count as session ``session_id`` (the
    app's user, say), so that listener's budgets apply; any other path is refused.
    Keep ``expires_at`` short (minutes): a URL can be copied.
    """
    return SessionGate(settings or SessionSettings(), keys).sign_url(path, session_id, expires_at)
