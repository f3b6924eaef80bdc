"""Private Access Tokens: Privacy Pass (RFC 9577, RFC 9578) as a way past a sweep's escalation.

During a sweep, young sessions on the swept paths are escalated (asked to prove
themselves). A device whose platform attests it (Apple's iOS 16+ and macOS Ventura+, through
the Cloudflare and Fastly issuers) answers ``WWW-Authenticate: PrivateToken`` with a token,
and skips the escalation without solving anything; its session is then proven.

Only publicly verifiable tokens are accepted (type 0x0002: RSA blind signatures, RSABSSA-SHA384-
PSS with a 2048-bit key): the token's authenticator is an RSASSA-PSS signature (SHA-384,
MGF1-SHA-384, 48-byte salt) over the token input, checked with the issuer's public key.

A challenge names the issuer, a redemption context and this origin. The context changes every
``window`` seconds (the current and previous ones are accepted), so a token is good for minutes,
not for ever; a token's nonce is spent once per process (a bounded memory of nonces).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from guard.lru import LRU

if TYPE_CHECKING:
    from guard.policy.engine import Decision, Facts
    from guard.policy.model import PrivateTokens as TokensSpec
    from guard.sessions.gate import Reading
    from guard.sessions.service import Reply, Sessions

log = logging.getLogger("guard")
TOKEN_TYPE = 0x0002  # publicly verifiable, RSA blind signatures
NK = 256  # bytes of a 2048-bit RSA signature
TOKEN_LENGTH = 2 + 32 + 32 + 32 + NK
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
SWEEP_REASON = "the site is under a sweep: a new session proves itself first"


@dataclass(frozen=True, slots=True)
class Issuer:
    """One accepted issuer: its name, public key and key id (SHA-256 of the key as published)."""

    name: str
    token_key: str  # base64url of the SubjectPublicKeyInfo, as the issuer publishes it
    key: rsa.RSAPublicKey
    key_id: bytes


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """The rules' ``private_tokens:`` section, compiled."""

    issuers: tuple[Issuer, ...]
    groups: frozenset[str]
    young: float = 3600.0
    origin: str = ""
    window: float = 300.0
    sweep: bool = False


def b64decode(text: str | bytes) -> bytes:
    """base64url (or standard base64), with or without padding; ValueError if neither."""
    raw = text.encode("latin-1") if isinstance(text, str) else text
    raw = raw.strip().replace(b"+", b"-").replace(b"/", b"_")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not base64url: {error}") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def issuer(name: str, token_key: str) -> Issuer:
    """An :class:`Issuer` from its published key; ValueError when the key is not an RSA key."""
    der = b64decode(token_key)
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError(f"token_key of '{name}' is not a public key: {error}") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != NK * 8:
        raise ValueError(f"token_key of '{name}' is not a 2048-bit RSA key (type 0x0002)")
    return Issuer(name, b64encode(der), key, hashlib.sha256(der).digest())


def compile_tokens(spec: TokensSpec) -> TokenSettings:
    """The request path's settings from the validated rules section (the model checked the keys)."""
    issuers = tuple(issuer(i.name, i.token_key) for i in spec.issuers)
    groups = [spec.paths] if isinstance(spec.paths, str) else spec.paths
    return TokenSettings(issuers, frozenset(groups), spec.young, spec.origin or "", spec.window, spec.sweep)


def token_challenge(issuer_name: str, context: bytes, origin: str) -> bytes:
    """The TokenChallenge structure of RFC 9577 (section 2.1) for a type 0x0002 token."""
    name, origin_info = issuer_name.encode(), origin.encode()
    return (
        struct.pack("!HH", TOKEN_TYPE, len(name))
        + name
        + bytes([len(context)])
        + context
        + struct.pack("!H", len(origin_info))
        + origin_info
    )


def redemption_context(origin: str, window: int) -> bytes:
    """32 bytes that change every window: a token answers a recent challenge only."""
    return hashlib.sha256(f"guard private token|{origin}|{window}".encode()).digest()


def token_value(authorization: bytes) -> bytes | None:
    """The token of ``Authorization: PrivateToken token="..."``, decoded; None if it is not one."""
    scheme, _, params = authorization.strip().partition(b" ")
    if scheme.lower() != b"privatetoken":
        return None
    for param in params.split(b","):
        name, _, value = param.strip().partition(b"=")
        if name.strip().lower() == b"token":
            try:
                return b64decode(value.strip().strip(b'"'))
            except ValueError:
                return None
    return None


class PrivateTokens:
    """Challenges for, and checks of, Private Access Tokens under one policy's settings."""

    def __init__(self, settings: TokenSettings, max_nonces: int = 200_000) -> None:
        self.settings = settings
        self._spent: LRU[bytes, bool] = LRU(max_nonces)

    def challenges(self, now: float) -> list[tuple[Issuer, bytes]]:
        """The current challenge of each issuer."""
        s = self.settings
        context = redemption_context(s.origin, int(now // s.window))
        return [(i, token_challenge(i.name, context, s.origin)) for i in s.issuers]

    def www_authenticate(self, now: float) -> bytes:
        """The ``WWW-Authenticate`` value asking for a token from any accepted issuer."""
        offers = [
            f'PrivateToken challenge="{b64encode(c)}", token-key="{i.token_key}"' for i, c in self.challenges(now)
        ]
        return ", ".join(offers).encode("ascii")

    def verify(self, authorization: bytes | None, now: float) -> bool:
        """Whether the header holds a valid, unspent token for a current challenge of ours."""
        token = token_value(authorization) if authorization else None
        if token is None or len(token) != TOKEN_LENGTH or struct.unpack("!H", token[:2])[0] != TOKEN_TYPE:
            return False
        nonce, digest, key_id = token[2:34], token[34:66], token[66:98]
        found = next((i for i in self.settings.issuers if i.key_id == key_id), None)
        if found is None or digest not in self._digests(found, now) or self._spent.peek(nonce):
            return False
        try:
            found.key.verify(token[98:], token[:98], PSS, hashes.SHA384())
        except InvalidSignature:
            return False
        self._spent.put(nonce, True)
        return True

    def _digests(self, found: Issuer, now: float) -> tuple[bytes, ...]:
        s = self.settings
        window = int(now // s.window)
        contexts = (redemption_context(s.origin, window), redemption_context(s.origin, window - 1))
        return tuple(hashlib.sha256(token_challenge(found.name, c, s.origin)).digest() for c in contexts)

    def escalates(self, facts: Facts, decision: Decision, now: float, sweeping: bool) -> bool:
        """Whether a sweep escalates this request: a young, unproven session on a swept path,
        which the rules allowed (and enforce: not in shadow mode)."""
        session = facts.session
        return (
            sweeping
            and decision.allowed
            and session is not None
            and facts.where.group in self.settings.groups
            and session.proven_until <= now
            and now - session.issued_at < self.settings.young
        )

    def settle(
        self, sessions: Sessions, reading: Reading, decision: Decision, facts: Facts, authorization: bytes | None
    ) -> tuple[list[tuple[bytes, bytes]], Reply | None]:
        """An escalated request: with a valid token, served and its session proven (the Set-Cookie);
        without, the session's challenge with a ``WWW-Authenticate: PrivateToken`` offer (a 401)."""
        now = reading.now
        if self.verify(authorization, now):
            session = facts.session
            assert session is not None  # escalates() said so
            proof = sessions.settings.challenge.proof_ttl
            proven = replace(session, proven_until=float(int(now + proof)))
            return [(b"set-cookie", sessions.gate.set_cookie(proven, reading.request.https, now))], None
        challenge = replace(decision, action="challenge", reason=SWEEP_REASON)
        refusal = sessions.refusal(reading, challenge, facts.path, facts.query)
        offer = (b"www-authenticate", self.www_authenticate(now))
        headers = (*(h for h in refusal.headers if h[0] != b"www-authenticate"), offer)
        return [], replace(refusal, status=401, headers=headers)


def authorization_of(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The request's Authorization header (from :func:`guard.headers.request_headers`)."""
    return headers.get(b"authorization")
