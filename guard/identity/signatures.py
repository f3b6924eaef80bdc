"""Signed agents: Web Bot Auth, i.e. HTTP Message Signatures (RFC 9421) with Ed25519.

An agent that signs sends ``Signature-Input``, ``Signature`` and usually
``Signature-Agent`` (where its key directory lives). guard rebuilds the signature base
(RFC 9421 section 2.5) from the covered components, finds the key by its ``keyid`` (the
RFC 7638 JWK thumbprint) among the keys configured for that signer, and checks the
Ed25519 signature, the ``created``/``expires`` window and the ``web-bot-auth`` tag.

Keys come from a directory file (JSON), kept fresh by whoever deploys guard::

    {"https://signer.example": {"agent": "ChatGPT-User",
                                "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "..."}]}}

Only requests that carry a signature pay for this (tens of microseconds).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TAG = "web-bot-auth"
#: Signatures valid for longer than this are refused (the drafts ask for short lifetimes).
MAX_VALIDITY = 24 * 3600
#: Tolerated clock difference with the signer, seconds.
SKEW = 60

_MEMBER = re.compile(r"\s*([a-z*][a-z0-9_.*-]*)=")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PARAM = re.compile(r';\s*([a-z*][a-z0-9_.*-]*)(?:=("(?:[^"\\]|\\.)*"|[^;,\s]+))?')


@dataclass(frozen=True, slots=True)
class Signer:
    """A signer's catalogue agent and its keys, by keyid (JWK thumbprint)."""

    agent: str
    keys: dict[str, Ed25519PublicKey]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome for one request: which agent signed, and whether the signature holds."""

    agent: str | None
    ok: bool
    reason: str
    covered: tuple[str, ...] = ()  # the components the signature covers (when it verified)


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint of an Ed25519 (OKP) JWK, base64url without padding."""
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignatureVerifier:
    """Verifies Web Bot Auth signatures against a directory of known signers."""

    def __init__(self, signers: Mapping[str, Signer]) -> None:
        self.signers = dict(signers)
        self._by_keyid = {keyid: (name, s) for name, s in self.signers.items() for keyid in s.keys}

    @classmethod
    def from_file(cls, path: str | Path) -> SignatureVerifier:
        """Load a directory file (see the module docstring)."""
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        signers = {}
        for origin, entry in doc.items():
            keys = {}
            for jwk in entry.get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                    keys[jwk.get("kid") or jwk_thumbprint(jwk)] = Ed25519PublicKey.from_public_bytes(
                        _unb64url(jwk["x"])
                    )
            signers[origin.rstrip("/")] = Signer(entry["agent"], keys)
        return cls(signers)

    def verify(
        self, headers: Mapping[str, list[str]], *, method: str, authority: str, path: str, query: str, now: float
    ) -> SignatureCheck:
        """Check the request's Web Bot Auth signature. ``headers``: lower-case name -> values."""
        try:
            return self._verify(headers, method, authority, path, query, now)
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # malformed input never raises
            return SignatureCheck(None, False, f"malformed signature: {exc}")

    def _verify(
        self, headers: Mapping[str, list[str]], method: str, authority: str, path: str, query: str, now: float
    ) -> SignatureCheck:
        inputs = _dictionary(", ".join(headers.get("signature-input", [])))
        signatures = _dictionary(", ".join(headers.get("signature", [])))
        label = next((name for name, raw in inputs.items() if _params(raw).get("tag") == TAG), None)
        if label is None or label not in signatures:
            return SignatureCheck(None, False, "no web-bot-auth signature")
        raw_input = inputs[label]
        params = _params(raw_input)
        keyid = params.get("keyid", "")
        origin = _signature_agent(headers, label)
        if origin is not None:
            signer = self.signers.get(origin.rstrip("/"))
        else:
            signer = self._by_keyid.get(keyid, (None, None))[1]
        if signer is None:
            return SignatureCheck(None, False, f"unknown signer {origin or keyid!r}")
        key = signer.keys.get(keyid)
        if key is None:
            return SignatureCheck(signer.agent, False, f"unknown key {keyid!r}")
        if params.get("alg", "ed25519") != "ed25519":
            return SignatureCheck(signer.agent, False, f"unsupported alg {params['alg']!r}")
        created, expires = int(params["created"]), int(params["expires"])
        if created > now + SKEW:
            return SignatureCheck(signer.agent, False, "created in the future")
        if expires <= now - SKEW:
            return SignatureCheck(signer.agent, False, "expired")
        if expires - created > MAX_VALIDITY:
            return SignatureCheck(signer.agent, False, "validity window too long")
        components = _STRING.findall(raw_input[: raw_input.index(")")])
        if "@authority" not in components or (origin is not None and "signature-agent" not in components):
            return SignatureCheck(signer.agent, False, "signature does not cover @authority and signature-agent")
        base = signature_base(
            components, raw_input, headers, method=method, authority=authority, path=path, query=query
        )
        signature = _byte_sequence(signatures[label])
        try:
            key.verify(signature, base.encode())
        except InvalidSignature:
            return SignatureCheck(signer.agent, False, "bad signature")
        return SignatureCheck(signer.agent, True, "verified", tuple(components))


def signature_base(
    components: list[str],
    raw_params: str,
    headers: Mapping[str, list[str]],
    *,
    method: str,
    authority: str,
    path: str,
    query: str,
) -> str:
    """The RFC 9421 signature base for ``components`` (plain names; derived ones start with @)."""
    lines = []
    for name in components:
        if name == "@method":
            value = method.upper()
        elif name == "@authority":
            value = authority.lower()
        elif name == "@path":
            value = path or "/"
        elif name == "@query":
            value = "?" + query
        elif name.startswith("@"):
            raise ValueError(f"unsupported derived component {name}")
        else:
            values = headers.get(name)
            if values is None:
                raise ValueError(f"covered header {name!r} is missing")
            value = ", ".join(v.strip() for v in values)
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {raw_params}')
    return "\n".join(lines)


def _dictionary(text: str) -> dict[str, str]:
    """Split a structured-field dictionary into ``{name: raw member text}``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _MEMBER.match(text, pos)
        if m is None:
            raise ValueError("bad dictionary member")
        start = pos = m.end()
        depth, quoted = 0, False
        while pos < len(text):
            c = text[pos]
            if quoted:
                if c == "\\":
                    pos += 1
                elif c == '"':
                    quoted = False
            elif c == '"':
                quoted = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "," and depth == 0:
                break
            pos += 1
        out[m.group(1)] = text[start:pos].strip()
        pos += 1
    return out


def _params(raw: str) -> dict[str, str]:
    """Parameters after an inner list or item: ``;created=1;keyid="x"`` -> {created: 1, keyid: x}."""
    tail = raw[raw.rindex(")") + 1 :] if ")" in raw else raw[raw.find(";") :] if ";" in raw else ""
    return {k: v.strip('"') if v else "" for k, v in _PARAM.findall(tail)}


def _byte_sequence(raw: str) -> bytes:
    raw = raw.strip()
    if not (raw.startswith(":") and raw.endswith(":") and len(raw) >= 2):
        raise ValueError("signature is not a byte sequence")
    return base64.b64decode(raw[1:-1], validate=True)


def _signature_agent(headers: Mapping[str, list[str]], label: str) -> str | None:
    """The signer's origin from Signature-Agent: a plain string, or a dictionary keyed by label."""
    values = headers.get("signature-agent")
    if not values:
        return None
    text = ", ".join(values).strip()
    if text.startswith('"'):
        m = _STRING.match(text)
        return m.group(1) if m else None
    member = _dictionary(text).get(label)
    m = _STRING.match(member or "")
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of an ASGI request a Web Bot Auth signature covers (RFC 9421 components)."""

    headers: dict[str, list[str]]
    method: str
    authority: str
    path: str
    query: str

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> SignedRequest | None:
        """The request's signed parts, or None when it carries no ``Signature-Input``."""
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        if "signature-input" not in headers:
            return None
        raw_path = scope.get("raw_path") or scope.get("path", "/").encode()
        return cls(
            headers,
            method=scope.get("method", "GET"),
            authority=(headers.get("host") or [""])[0],
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
        )

    def verify(self, verifier: SignatureVerifier, now: float) -> SignatureCheck:
        return verifier.verify(
            self.headers, method=self.method, authority=self.authority, path=self.path, query=self.query, now=now
        )


def check_signature(
    verifier: SignatureVerifier | None, scope: Mapping[str, Any], clock: Callable[[], float]
) -> SignatureCheck | None:
    """The request's Web Bot Auth check, or None when it is unsigned (or nobody checks signatures)."""
    if verifier is None:
        return None
    request = SignedRequest.from_scope(scope)
    return None if request is None else request.verify(verifier, clock())
