"""Licence tokens: JWTs the platform signs (Ed25519, with joserfc) and crawlers present.

A crawler sends ``Authorization: License <token>`` (RSL's scheme). The token names the
operator it was issued to (``sub``), the artists and usages it covers, its id (``jti``)
and its validity (``nbf``/``exp``)::

    {"iss": "guard", "sub": "OpenAI", "jti": "lic_...", "iat": ..., "nbf": ..., "exp": ...,
     "artists": ["a7"], "usages": ["ai-train"]}

Verifying costs tens of microseconds; verified claims are cached per token (bounded), and
the validity period is checked against the clock on every use, so a cached token still
expires on time. The signing key is a JWK file (created, mode 0600, on first use).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from guard.lru import LRU

ALGORITHM = "Ed25519"
#: Longer Authorization values are refused unread.
MAX_TOKEN = 4096
DEFAULT_KEY = "~/.config/guard/licence-key.json"


@dataclass(frozen=True, slots=True)
class Licence:
    """A verified licence token's claims."""

    id: str
    operator: str
    artists: frozenset[str]
    usages: frozenset[str]
    not_before: float
    expires: float

    def covers(self, operator: str | None, artist: str, usage: str) -> str | None:
        """None if this licence covers the use, else why not (in words)."""
        if operator is None or operator.casefold() != self.operator.casefold():
            return f"licence {self.id} is for operator {self.operator}, not {operator or 'an unknown operator'}"
        if artist not in self.artists and "*" not in self.artists:
            return f"licence {self.id} does not cover artist {artist}"
        if usage not in self.usages:
            return f"licence {self.id} does not cover usage {usage}"
        return None

    def current(self, now: float) -> str | None:
        """None if valid at ``now``, else why not."""
        if now < self.not_before:
            return f"licence {self.id} is not valid yet"
        if now >= self.expires:
            return f"licence {self.id} has expired"
        return None


def default_key_path() -> Path:
    """``$GUARD_LICENCE_KEY``, else ~/.config/guard/licence-key.json."""
    return Path(os.environ.get("GUARD_LICENCE_KEY") or DEFAULT_KEY).expanduser()


def load_key(path: str | Path | None = None, *, create: bool = True) -> OKPKey:
    """The platform's Ed25519 signing key from a JWK file, generated on first use."""
    path = Path(path).expanduser() if path is not None else default_key_path()
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"licence key {path} does not exist")
        key = OKPKey.generate_key("Ed25519")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(key.as_dict(private=True), f)
        return key
    return OKPKey.import_key(json.loads(path.read_text(encoding="utf-8")))


class Licences:
    """Issues and verifies licence tokens with one key."""

    def __init__(self, key: OKPKey, issuer: str = "guard", cache_size: int = 4096) -> None:
        self.key = key
        self.issuer = issuer
        self._cache: LRU[str, Licence | str] = LRU(cache_size)

    def issue(
        self, operator: str, artists: Iterable[str], usages: Iterable[str], *, now: float, days: float = 30
    ) -> str:
        """A signed token for ``operator`` on ``artists`` for ``usages``, valid ``days`` from ``now``."""
        claims = {
            "iss": self.issuer,
            "sub": operator,
            "jti": "lic_" + secrets.token_urlsafe(12),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + days * 86400),
            "artists": sorted(set(artists)),
            "usages": sorted(set(usages)),
        }
        return jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, self.key, algorithms=[ALGORITHM])

    def verify(self, token: str) -> Licence | str:
        """The token's licence, or why it is not one (bad signature, wrong issuer, malformed).

        Validity in time is separate: see :meth:`Licence.current`.
        """
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify(token)
            if len(token) <= MAX_TOKEN:  # a longer one is refused each time, never kept: bounded bytes
                self._cache.put(token, cached)
        return cached

    def _verify(self, token: str) -> Licence | str:
        if len(token) > MAX_TOKEN:
            return "licence token too long"
        try:
            claims = jwt.decode(token, self.key, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError, TypeError) as exc:
            return f"licence token does not verify ({exc.__class__.__name__})"
        try:
            if claims.get("iss") != self.issuer:
                return "licence token from another issuer"
            return Licence(
                id=str(claims["jti"]),
                operator=str(claims["sub"]),
                artists=frozenset(str(a) for a in claims["artists"]),
                usages=frozenset(str(u) for u in claims["usages"]),
                not_before=float(claims.get("nbf", 0)),
                expires=float(claims["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return "licence token lacks operator, artists, usages or expiry"


def token_from(authorization: str | None) -> str | None:
    """The token of an ``Authorization: License <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "license":
        return None
    return token.strip() or None
