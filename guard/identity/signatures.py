"""Signed agents: Web Bot Auth (draft-ietf-webbotauth-httpsig-protocol-01) over RFC 9421.

An agent that signs sends ``Signature-Input``, ``Signature`` and ``Signature-Agent``. The
``Signature-Agent`` member keyed by the signature's label names the agent's key directory (a
JWK Set; by default at ``/.well-known/http-message-signatures-directory`` on the agent's
origin). guard checks, in this order, cheapest first:

1. the headers are not oversized, and one signature carries ``tag="web-bot-auth"``;
2. its ``Signature-Agent`` member names a directory guard already knows (the signer file);
   a directory guard does not know earns nothing: it is never fetched from here, so a
   request can neither make guard reach an arbitrary URL nor wait for one;
3. its ``keyid`` (the RFC 7638 JWK thumbprint) is a key *of that directory*: keys are looked
   up per (directory, keyid), never by keyid alone, so one signer's key cannot speak for
   another signer's URL;
4. it covers ``@authority`` (or ``@target-uri``) and that ``Signature-Agent`` member, its
   ``created``/``expires`` window is present, current and at most :data:`MAX_VALIDITY` long;
5. the RFC 9421 signature base and Ed25519 signature hold (the ``http-message-signatures``
   library does this part);
6. its ``nonce``, when it has one, was not seen before (a replay).

Outcomes (the draft's appendix C.1): *verified* (the agent is proven), *invalid* (a known
signer's key, but the signature, coverage or window is wrong: the claim is refuted) and
*unverified* (nothing to decide with: unknown directory or key, no web-bot-auth signature,
a replay). Unverified requests are judged as if unsigned.

Keys come from the signer file named by ``signatures: {directory: ...}`` in the rules::

    {"https://signer.example/.well-known/http-message-signatures-directory":
        {"agent": "ChatGPT-User", "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "..."}]}}

An entry may be named by its directory URL or by the agent's origin (then its directory is
the well-known URI there). ``guard update-signers`` refreshes the keys from each directory
(a cron job, see :mod:`guard.identity.keydirectory`); the rules reloader picks the file up.

Until the next release the older forms keep verifying (``legacy``): ``Signature-Agent`` as a
bare string, a dictionary covered whole as ``"signature-agent"``, and no ``Signature-Agent``
at all (the key then found by its keyid among every signer's keys).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from guard.errors import ConfigError
from guard.lru import LRU

log = logging.getLogger("guard")

TAG = "web-bot-auth"
#: Where an origin's key directory lives (the draft's well-known URI) and its media type.
WELL_KNOWN = "/.well-known/http-message-signatures-directory"
MEDIA_TYPE = "application/http-message-signatures-directory+json"
#: Signatures valid for longer than this are refused (the draft recommends at most 24 hours).
MAX_VALIDITY = 24 * 3600
#: Tolerated clock difference with the signer, seconds.
SKEW = 60
#: Larger Signature-Input, Signature or Signature-Agent fields are not parsed at all.
MAX_FIELD = 4096
#: At most this many web-bot-auth signatures of one request are checked.
MAX_SIGNATURES = 4
#: Nonces remembered per process (only those of verified signatures, so only real signers fill it).
REPLAY_MEMORY = 65536
#: Components that bind a signature to this site (the draft asks for one of them).
AUTHORITY = ("@authority", "@target-uri")
#: What may stay as it is in a URL's path (RFC 3986 pchar and "/", and escapes already made).
_URI_SAFE = "/:@!$&'()*+,;=-._~%"
#: RFC 9421's own example key (appendix B.1.4): its private half is public.
TEST_KEYS = frozenset({"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"})


class Outcome(Enum):
    """The draft's three verifier outcomes."""

    VERIFIED = "verified"
    INVALID = "invalid"
    UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome for one request: which agent signed, and whether the signature holds.

    ``agent`` is None when the signature proves nothing either way (unverified); with
    ``ok`` False it names the agent whose known key the request failed to prove.
    """

    agent: str | None
    ok: bool
    reason: str
    covered: tuple[str, ...] = ()  # whole fields and derived components covered (when verified)
    signer: str | None = None  # the key directory the signature was checked against
    legacy: bool = False  # verified in a form accepted for one more release only

    @property
    def outcome(self) -> Outcome:
        if self.ok:
            return Outcome.VERIFIED
        return Outcome.INVALID if self.agent is not None else Outcome.UNVERIFIED


@dataclass(frozen=True, slots=True)
class DirectoryKey:
    """One Ed25519 key of a directory, with the JWK's optional ``nbf``/``exp`` bounds."""

    key: Ed25519PublicKey
    not_before: float | None = None
    not_after: float | None = None

    def usable(self, now: float) -> bool:
        return (self.not_before is None or self.not_before <= now + SKEW) and (
            self.not_after is None or now - SKEW < self.not_after
        )


@dataclass(frozen=True, slots=True)
class Signer:
    """A key directory (its URL is the identifier), its catalogue agent and keys by thumbprint."""

    agent: str
    keys: dict[str, DirectoryKey]
    directory: str = ""


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an Ed25519 (OKP) JWK, base64url without padding."""
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def ed25519_key(jwk: Mapping[str, Any]) -> tuple[str, DirectoryKey] | None:
    """``(thumbprint, key)`` for an Ed25519 JWK, None for another kind of key.

    Raises ValueError for a malformed Ed25519 JWK. The key is always indexed by the
    thumbprint computed here, never by the directory's own ``kid`` label.
    """
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ValueError("Ed25519 JWK without a text x")
    raw = _unb64url(x)
    if len(raw) != 32:
        raise ValueError("Ed25519 JWK x is not 32 bytes")
    bounds = [jwk.get(name) for name in ("nbf", "exp")]
    if any(b is not None and (isinstance(b, bool) or not isinstance(b, int | float)) for b in bounds):
        raise ValueError("JWK nbf/exp must be numbers")
    return jwk_thumbprint(jwk), DirectoryKey(Ed25519PublicKey.from_public_bytes(raw), bounds[0], bounds[1])


def directory_id(url: str) -> str | None:
    """The normalised identifier of a key directory URL, or None when it cannot be one.

    https only, no credentials; scheme and host lower-cased, the default port, query and
    fragment dropped. A bare origin stands for the well-known directory on it (what signers
    of the earlier drafts, and most today, send).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme.lower() != "https" or not host or parts.username is not None or parts.password is not None:
        return None
    if not host.isascii() or any(c in host for c in " \t/\\"):
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, 443) else f"{host}:{port}"
    path = parts.path if parts.path not in ("", "/") else WELL_KNOWN
    return f"https://{netloc}{path}"


def load_signers(path: str | Path) -> dict[str, Signer]:
    """Read a signer file (see the module docstring): ``{directory id: Signer}``."""
    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(where, None, str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigError(where, None, "expected an object of signers by directory URL")
    signers: dict[str, Signer] = {}
    for name, entry in doc.items():
        ident = directory_id(name)
        if ident is None:
            raise ConfigError(where, None, f"{name!r} is not an https URL")
        if not isinstance(entry, dict) or not isinstance(entry.get("agent"), str):
            raise ConfigError(where, None, f"{name!r} needs an agent name")
        keys = {}
        for jwk in entry.get("keys", []):
            try:
                parsed = ed25519_key(jwk)
            except ValueError as exc:
                raise ConfigError(where, None, f"{name!r}: {exc}") from None
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
                if jwk.get("x") in TEST_KEYS:
                    log.warning("guard: %s lists RFC 9421's public test key; never use it in production", name)
        signers[ident] = Signer(entry["agent"], keys, ident)
    return signers


class ReplayMemory:
    """Nonces of verified signatures until their ``expires`` (bounded; per process)."""

    def __init__(self, size: int = REPLAY_MEMORY) -> None:
        self._seen: LRU[tuple[str, str, str], float] = LRU(size)

    def replayed(self, key: tuple[str, str, str], expires: float, now: float) -> bool:
        """True when ``key`` was seen before and has not expired; else remember it."""
        until = self._seen.peek(key)
        if until is not None and now - SKEW <= until:
            return True
        self._seen.put(key, expires)
        return False


class SignatureVerifier:
    """Verifies Web Bot Auth signatures against the key directories guard knows."""

    def __init__(
        self,
        signers: Mapping[str, Signer],
        *,
        legacy: bool = True,
        replays: ReplayMemory | None = None,
        max_validity: int = MAX_VALIDITY,
    ) -> None:
        """``signers``: by directory URL (normalised here). ``legacy``: accept the older forms.

        ``max_validity``: the longest ``expires - created`` accepted, seconds.
        """
        self.signers: dict[str, Signer] = {}
        for name, signer in signers.items():
            ident = directory_id(name)
            if ident is None:
                raise ValueError(f"signer {name!r} is not an https URL")
            self.signers[ident] = Signer(signer.agent, dict(signer.keys), ident)
        self.legacy = legacy
        self.max_validity = max_validity
        self.replays = replays if replays is not None else ReplayMemory()
        self._by_keyid = {keyid: s for s in reversed(self.signers.values()) for keyid in s.keys}
        self._legacy_logged: set[str] = set()  # at most one line per known directory

    @classmethod
    def from_file(
        cls, path: str | Path, *, legacy: bool = True, replays: ReplayMemory | None = None
    ) -> SignatureVerifier:
        """Load a signer file (see the module docstring)."""
        return cls(load_signers(path), legacy=legacy, replays=replays)

    def check(self, request: SignedRequest, now: float) -> SignatureCheck:
        """The request's Web Bot Auth outcome; malformed input never raises."""
        try:
            return self._check(request, now)
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # a parser's surprise is a bad signature
            return _unverified(f"malformed signature headers: {type(exc).__name__}")

    def _check(self, request: SignedRequest, now: float) -> SignatureCheck:
        fields = [request.field(name) for name in ("signature-input", "signature", "signature-agent")]
        if any(len(value or "") > MAX_FIELD for value in fields):
            return _unverified("oversized signature headers")
        try:
            inputs = parse_field(fields[0] or "", "dictionary")
            agents = _AgentMembers.parse(fields[2])
        except ValueError as exc:
            return _unverified(f"malformed signature headers: {exc}")
        labels = [
            label
            for label, (members, params) in inputs.items()
            if isinstance(members, list) and params.get("tag") == TAG
        ][:MAX_SIGNATURES]
        if not labels:
            return _unverified("no web-bot-auth signature")
        outcome: SignatureCheck | None = None
        for label in labels:
            check = self._check_one(label, inputs[label], agents, request, now)
            if check.ok:
                return check
            if outcome is None or (outcome.agent is None and check.agent is not None):
                outcome = check  # a refuted claim outweighs one that proves nothing
        assert outcome is not None
        return outcome

    def verify(
        self, headers: Mapping[str, list[str]], *, method: str, authority: str, path: str, query: str, now: float
    ) -> SignatureCheck:
        """Check a request given as its parts (``headers``: lower-case name -> values)."""
        pairs = [(name, value) for name, values in headers.items() for value in values]
        return self.check(SignedRequest(pairs, method, authority, path, query), now)

    def _check_one(
        self, label: str, member: tuple[Any, dict[str, Any]], agents: _AgentMembers, request: SignedRequest, now: float
    ) -> SignatureCheck:
        components, params = member
        keyid = params.get("keyid")
        if not isinstance(keyid, str):
            return _unverified("signature without a keyid")
        covered = [(name, dict(p)) for name, p in components if isinstance(name, str)]
        found = self._signer(label, keyid, covered, agents)
        if isinstance(found, SignatureCheck):
            return found
        signer, legacy = found
        key = signer.keys.get(keyid)
        if key is None:  # perhaps a rotation guard has not fetched yet: unverified, not refuted
            return _unverified(f"key {keyid!r} is not in {signer.directory}", signer.directory)
        agent = signer.agent
        if not key.usable(now):
            return SignatureCheck(agent, False, "key outside its nbf/exp", signer=signer.directory)
        if not any((name, {}) in covered for name in AUTHORITY):
            return SignatureCheck(agent, False, "signature does not cover @authority", signer=signer.directory)
        window = _window(params, now, self.max_validity)
        if window is not None:
            return SignatureCheck(agent, False, window, signer=signer.directory)
        try:
            KeyVerifier(keyid, key.key).verify(request.message(), expect_tag=TAG, expect_label=label, max_age=None)
        except (InvalidSignature, HTTPMessageSignaturesException) as exc:
            return SignatureCheck(agent, False, f"bad signature: {exc}", signer=signer.directory)
        nonce = params.get("nonce")
        if isinstance(nonce, str) and self.replays.replayed((signer.directory, keyid, nonce), params["expires"], now):
            return _unverified("replayed nonce", signer.directory)
        if legacy and signer.directory not in self._legacy_logged:
            self._legacy_logged.add(signer.directory)
            log.warning("guard: %s signs in an older Web Bot Auth form, accepted until the next release", agent)
        names = tuple(name for name, p in covered if not p)
        return SignatureCheck(agent, True, "verified", names, signer.directory, legacy)

    def _signer(
        self, label: str, keyid: str, covered: list[tuple[str, dict[str, Any]]], agents: _AgentMembers
    ) -> tuple[Signer, bool] | SignatureCheck:
        """The signer whose keys may verify ``label`` and whether that takes a legacy form.

        The directory is the Signature-Agent member the signature covers: the one keyed by
        its label, or the only one it covers (RFC 9421 lets a hop relabel a signature; the
        member key is signed). A member it does not cover never names its signer.
        """
        keys = [p["key"] for name, p in covered if name == "signature-agent" and list(p) == ["key"]]
        whole = ("signature-agent", {}) in covered
        if keys and agents.form == "dictionary":
            chosen = label if label in keys else keys[0] if len(keys) == 1 else None
            if chosen is None:
                return _unverified("the signature covers several Signature-Agent members")
            url, legacy = agents.members.get(chosen), False
        elif whole and self.legacy and agents.form in ("string", "dictionary"):
            members = agents.members
            url = members.get("", members.get(label, next(iter(members.values())) if len(members) == 1 else None))
            legacy = True
        elif agents.form == "absent":
            by_key = self._by_keyid.get(keyid) if self.legacy else None  # the key alone names its signer
            return (by_key, True) if by_key is not None else _unverified(f"no Signature-Agent and key {keyid!r}")
        else:  # a form not accepted (any more), or a Signature-Agent the signature does not bind
            return _unverified(f"signature does not cover its Signature-Agent member ({agents.form} form)")
        if url is None:
            return _unverified(f"no usable Signature-Agent member for {label!r}")
        ident = directory_id(url)
        signer = self.signers.get(ident) if ident else None
        if signer is None:  # never fetched from here: see the module docstring
            return _unverified(f"unknown signature agent {url[:200]!r}")
        return signer, legacy


def _unverified(reason: str, signer: str | None = None) -> SignatureCheck:
    return SignatureCheck(None, False, reason, signer=signer)


def _window(params: Mapping[str, Any], now: float, max_validity: int) -> str | None:
    """Why the ``created``/``expires`` window is unacceptable, or None."""
    created, expires = params.get("created"), params.get("expires")
    if type(created) is not int or type(expires) is not int:
        return "created and expires are required"
    if created > now + SKEW:
        return "created in the future"
    if expires <= now - SKEW:
        return "expired"
    if expires < created:
        return "expires before created"
    if expires - created > max_validity:
        return "validity window too long"
    return None


def parse_field(text: str, kind: str) -> Any:
    """A structured field (RFC 9651) of ``kind`` (``dictionary``, ``item``); ValueError when malformed."""
    try:
        return http_sf.parse(text.encode("latin-1"), tltype=kind)
    except (http_sf.errors.StructuredFieldError, UnicodeEncodeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class _AgentMembers:
    """The Signature-Agent field: a dictionary of URLs by label, a bare string, or absent."""

    form: str  # "dictionary", "string" (legacy), "absent"
    members: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> _AgentMembers:
        if text is None:
            return cls("absent")
        if text.lstrip().startswith('"'):
            value, _ = parse_field(text, "item")
            return cls("string", {"": value}) if isinstance(value, str) else cls("malformed")
        members = {
            label: value
            for label, (value, params) in parse_field(text, "dictionary").items()
            if isinstance(value, str) and not params  # the draft: a member with parameters is ignored
        }
        return cls("dictionary", members)


class _OneKey(HTTPSignatureKeyResolver):
    """The one key the signature may use (chosen from its directory before verifying)."""

    def __init__(self, keyid: str, key: Ed25519PublicKey) -> None:
        self.keyid, self.key = keyid, key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self.key if key_id == self.keyid else None


class KeyVerifier(HTTPMessageVerifier):
    """RFC 9421 verification by the library, with Ed25519 and the one key chosen beforehand.

    The ``created``/``expires`` window is checked before, with guard's injected clock
    (:func:`_window`): the library would read the wall clock itself.
    """

    def __init__(self, keyid: str, key: Ed25519PublicKey) -> None:
        super().__init__(signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(keyid, key))

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class FieldLines:
    """Header field lines as http-message-signatures reads them (``items()``; names may repeat)."""

    pairs: Sequence[tuple[str, str]]

    def items(self) -> Sequence[tuple[str, str]]:
        return self.pairs


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as http-message-signatures reads it: method, absolute URL, header field lines."""

    method: str
    url: str
    headers: FieldLines


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of a request a Web Bot Auth signature covers (RFC 9421 components)."""

    pairs: list[tuple[str, str]]  # header field lines, lower-case names, in order
    method: str
    authority: str
    path: str
    query: str

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> SignedRequest | None:
        """The request's signed parts, or None when it carries no ``Signature-Input``."""
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        if not any(name == "signature-input" for name, _ in pairs):
            return None
        raw_path = scope.get("raw_path") or scope.get("path", "/").encode()
        return cls(
            pairs,
            method=scope.get("method", "GET"),
            authority=next((v for k, v in pairs if k == "host"), ""),
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
        )

    def field(self, name: str) -> str | None:
        """All lines of field ``name`` joined as RFC 9110 combines them, None when absent."""
        values = [v.strip() for k, v in self.pairs if k == name]
        return ", ".join(values) if values else None

    def message(self) -> RequestView:
        # Signers sign the https URL (the draft requires TLS), whatever the hop behind the
        # TLS terminator spoke: the scheme only matters to @scheme and @target-uri.
        # Characters RFC 3986 does not allow (some clients send them raw) are escaped, or the
        # library refuses the URL whatever the signature covers.
        path = quote(self.path or "/", safe=_URI_SAFE)
        query = f"?{quote(self.query, safe=_URI_SAFE + '?')}" if self.query else ""
        return RequestView(self.method.upper(), f"https://{self.authority}{path}{query}", FieldLines(self.pairs))

    def verify(self, verifier: SignatureVerifier, now: float) -> SignatureCheck:
        return verifier.check(self, now)


def check_signature(
    verifier: SignatureVerifier | None, scope: Mapping[str, Any], clock: Callable[[], float]
) -> SignatureCheck | None:
    """The request's Web Bot Auth check, or None when it is unsigned (or nobody checks signatures)."""
    if verifier is None:
        return None
    request = SignedRequest.from_scope(scope)
    return None if request is None else verifier.check(request, clock())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
