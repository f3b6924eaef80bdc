"""Signed session tokens: what a session is, how it is bound, and the keys that sign it.

A token is a short text signed with HMAC-SHA256 by :mod:`itsdangerous`::

    1~<id>~<issued>~<state>~<proven_until>~<v4 network>~<v6 network>~<platform>.<signature>

It is verified with the current key or the previous one (key rotation), with no I/O.
It binds a session to:

* the client's **network**: a hash of its IPv4 /24 or IPv6 /48 (configurable), one slot
  per address family: the network it was last used from. A session follows its listener
  (Wi-Fi to 4G, IPv4 to IPv6): a request from another network moves the slot there and
  the token is sent again. What a copied token costs is counted, not forbidden: the rules
  limit the distinct networks a session is used from (``distinct: network``).
* the device's **platform family** (apple, android, windows, ...): the one thing a
  browser and its media stack share in their User-Agents. iOS Safari fetches pages as
  ``Mozilla/5.0 (iPhone; ...)`` and audio as ``AppleCoreMedia/... (iPhone; ...)``; an
  iPad's Safari even says ``Macintosh``; Android hands audio to stagefright or ExoPlayer.
  The full User-Agent, Accept-Language and the like differ across those hand-offs.
* the cookie itself, which is what the device keeps.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, Signer

from guard.errors import ConfigError
from guard.lru import LRU

#: Session states a rule can match (``session:`` in a rule's ``match``).
STATES = ("none", "fresh", "page", "proven")
_STATE_CODES = {"f": "fresh", "p": "page"}
_CODES = {v: k for k, v in _STATE_CODES.items()}
MAX_TOKEN = 400  # longer cookie values are not ours: refused before any hashing
MIN_KEY = 32  # characters of a session key


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session. ``id`` is stable for the session's life (counters key by it)."""

    id: str
    issued_at: float
    state: str = "fresh"  # "fresh" (never seen on a page navigation) or "page"
    proven_until: float = 0.0  # a solved challenge (or an app login) holds until then
    net4: str = ""  # network hashes; "" is an empty slot, filled on first use
    net6: str = ""
    platform: str = "other"

    def level(self, now: float) -> str:
        """The state rules match: ``proven`` while a proof holds, else ``page`` or ``fresh``."""
        return "proven" if self.proven_until > now else self.state


_platforms: LRU[str, str] = LRU(16384)


def platform_of(user_agent: str | None) -> str:
    """The platform family a browser and its media stack both name in their User-Agents (cached per string)."""
    if not user_agent:
        return "other"
    found = _platforms.peek(user_agent)
    if found is None:
        # A padded string (guard.identity.identify.MAX_UA_CHARS) is read at its ends: bounded work.
        found = _platform_of(user_agent if len(user_agent) <= 2048 else user_agent[:1024] + " " + user_agent[-1024:])
        if len(user_agent) <= 1024:
            _platforms.put(user_agent, found)
    return found


def _platform_of(user_agent: str) -> str:
    ua = user_agent.lower()
    if any(t in ua for t in ("iphone", "ipad", "ipod", "macintosh", "mac os x", "applecoremedia", "cfnetwork")):
        return "apple"  # iPadOS Safari claims a Mac; its AppleCoreMedia says iPad
    if any(t in ua for t in ("android", "stagefright", "exoplayer", "dalvik")):
        return "android"  # before "linux": Android UAs say Linux too
    if "windows" in ua:
        return "windows"
    if "cros" in ua:
        return "chromeos"
    if "linux" in ua or "x11" in ua:
        return "linux"
    return "other"


_tags: LRU[tuple[int, int, int, int], tuple[int, str]] = LRU(65536)


def network_tag(version: int, number: int, ipv4_prefix: int, ipv6_prefix: int) -> tuple[int, str]:
    """``(family, tag)``: a short hash of the client's network (its /24 or /48 by default), cached."""
    key = (version, number, ipv4_prefix, ipv6_prefix)
    found = _tags.peek(key)
    if found is None:
        found = _network_tag(version, number, ipv4_prefix, ipv6_prefix)
        _tags.put(key, found)
    return found


def _network_tag(version: int, number: int, ipv4_prefix: int, ipv6_prefix: int) -> tuple[int, str]:
    if version == 4:
        bits, prefix = 32, ipv4_prefix
    elif version == 6:
        bits, prefix = 128, ipv6_prefix
    else:
        return 0, "x"  # not an IP peer (a Unix socket): one network
    network = number >> (bits - prefix)
    digest = hashlib.blake2s(f"{version}/{prefix}/{network:x}".encode(), digest_size=6).digest()
    return version, base64.urlsafe_b64encode(digest).decode()


class SessionKeys:
    """The current signing key and, while a rotation is under way, the previous one.

    Tokens are signed with ``current`` and accepted under either key. To roll the key,
    make the current key the previous one and install a new current key; once every
    token signed with the old previous key has expired, it can be dropped.
    """

    def __init__(
        self, current: str, previous: str | None = None, *, ephemeral: bool = False, source: str = "session keys"
    ) -> None:
        for name, key in (("current", current), ("previous", previous)):
            if key is not None and len(key.strip()) < MIN_KEY:
                raise ConfigError(source, None, f"the {name} session key is shorter than {MIN_KEY} characters")
        self.current = current.strip()
        self.previous = previous.strip() if previous else None
        self.ephemeral = ephemeral  # generated at start-up: tokens die with the process

    @classmethod
    def generate(cls) -> SessionKeys:
        """A random key for this process only (tests, the demo, or no key configured)."""
        return cls(secrets.token_urlsafe(32), ephemeral=True)

    @classmethod
    def from_env(cls, name: str = "GUARD_SESSION_KEY") -> SessionKeys | None:
        """``$NAME`` (current) and ``$NAME_PREVIOUS``, or None when ``$NAME`` is unset."""
        current = os.environ.get(name)
        if not current:
            return None
        return cls(current, os.environ.get(name + "_PREVIOUS") or None, source=f"${name}")

    @classmethod
    def from_file(cls, path: str) -> SessionKeys:
        """A key file: the current key on its first line, the previous one (if any) on the second."""
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(path, None, f"cannot read the session key file: {exc.strerror or exc}") from None
        if not lines or len(lines) > 2:
            raise ConfigError(path, None, "the current session key on line 1, optionally the previous one on line 2")
        return cls(lines[0], lines[1] if len(lines) > 1 else None, source=path)

    def signer(self, salt: str) -> Signer:
        """An HMAC-SHA256 signer that signs with the current key and accepts either."""
        keys: Sequence[str] = [self.previous, self.current] if self.previous else [self.current]
        return _KeptKeySigner(list(keys), salt=salt, key_derivation="hmac", digest_method=hashlib.sha256)


class _KeptKeySigner(Signer):
    """itsdangerous' Signer, deriving each key once instead of on every call (an HMAC saved per token)."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        derived: dict = self.__dict__.setdefault("_derived", {})
        key = derived.get(secret_key)
        if key is None:
            key = derived[secret_key] = super().derive_key(secret_key)
        return key


#: Tokens whose signature was checked, per codec: a token is immutable, so a returning
#: browser's token is verified once, not on every request (expiry and binding are still
#: checked per request by the caller). Only valid tokens are kept.
VERIFIED_TOKENS = 65536


class SessionCodec:
    """Turns sessions into signed tokens and back (no I/O; a few microseconds each way).

    Tokens that verified are remembered (at most :data:`VERIFIED_TOKENS`, least recently
    used first out): the same token again costs a dictionary lookup instead of an HMAC.
    The codec belongs to one set of keys; a new key set (a reload) makes a new codec.
    """

    def __init__(self, keys: SessionKeys) -> None:
        self.keys = keys
        self._signer = keys.signer("guard.session")
        self._verified: LRU[str, Session] = LRU(VERIFIED_TOKENS)

    def new(self, now: float, platform: str, family: int, tag: str, *, state: str = "fresh") -> Session:
        """A new session bound to one network (of address ``family``) and a platform."""
        sid = secrets.token_urlsafe(16)
        session = Session(sid, float(int(now)), state, 0.0, platform=platform)
        return bind(session, family, tag)

    def dumps(self, session: Session) -> str:
        fields = (
            "1",
            session.id,
            str(int(session.issued_at)),
            _CODES[session.state],
            str(int(session.proven_until)),
            session.net4,
            session.net6,
            session.platform,
        )
        payload = "~".join(fields)
        token = self._signer.sign(payload).decode("ascii")
        # Signed here, so valid: the browser's first request with it needs no HMAC either.
        # Kept as it reads back (whole seconds), exactly what verifying it would give.
        issued = self._parse(payload)
        if issued is not None and len(token) <= MAX_TOKEN:
            self._verified.put(token, issued)
        return token

    def loads(self, token: str) -> Session | None:
        """The session in ``token``, or None when it is not one of ours (bad signature, junk)."""
        known = self._verified.peek(token)
        if known is not None:
            return known
        session = self._verify(token)
        if session is not None:
            self._verified.put(token, session)
        return session

    def _verify(self, token: str) -> Session | None:
        if not token or len(token) > MAX_TOKEN or not token.isascii():
            return None
        try:
            payload = self._signer.unsign(token).decode("ascii")
        except (BadSignature, UnicodeDecodeError, ValueError):
            return None
        return self._parse(payload)

    @staticmethod
    def _parse(payload: str) -> Session | None:
        """The session a verified token's payload describes (None: not a session of this format)."""
        parts = payload.split("~")
        if len(parts) != 8 or parts[0] != "1" or parts[3] not in _STATE_CODES:
            return None
        try:
            issued, proven = float(int(parts[2])), float(int(parts[4]))
        except ValueError:
            return None
        return Session(parts[1], issued, _STATE_CODES[parts[3]], proven, parts[5], parts[6], parts[7])


def bind(session: Session, family: int, tag: str) -> Session:
    """``session`` with its slot for address ``family`` set to ``tag`` (itself when it already is)."""
    if family == 6:
        return session if session.net6 == tag else replace(session, net6=tag)
    return session if session.net4 == tag else replace(session, net4=tag)


def binding_problem(session: Session, platform: str, network: tuple[int, str] | None = None) -> str | None:
    """Why ``session`` does not belong to this client, or None.

    The device's platform family; a network change is no problem (the session moves with
    its listener; the rules count the networks a session is used from), unless ``network``
    (the client's family and tag) is given: then a filled slot must be that network. That
    is for stores that cannot count a session across networks (a Redis Cluster)."""
    if session.platform != platform:
        return "the session belongs to another device"
    if network is not None:
        family, tag = network
        slot = session.net6 if family == 6 else session.net4
        if slot and slot != tag:
            return "the session belongs to another network"
    return None
