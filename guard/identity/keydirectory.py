"""Key directories of signed agents, fetched off the request path by ``guard update-signers``.

Each entry of the signer file (see :mod:`guard.identity.signatures`) names a directory: its
URL, or an origin whose directory is the well-known URI there. A refresh fetches every one
(a cron job, like ``guard update-ranges``), checks it, and rewrites the file only with what
passed; the rules reloader then picks the file up. The request path never fetches: a
``Signature-Agent`` that names a directory not in the file is never contacted.

A fetch follows the draft's rules for a verifier (draft-ietf-webbotauth-httpsig-protocol-01,
sections 5.5 and 6.7, appendix B): https only, to public addresses only, no redirects, status
200, the directory media type at the well-known URI, at most :data:`MAX_BYTES` and
:data:`MAX_KEYS`, a timeout. Keys are Ed25519 JWKs whose ``kid``, when present, is their RFC
7638 thumbprint.

The directory is signed by the agent: one signature per key, ``tag=
"http-message-signatures-directory"``, covering ``"@authority";req`` and ``content-digest``,
with ``created`` (not in the future) and ``expires`` (not past). A key is adopted only when
its own signature over this response holds (the possession proof), unless the entry says
``"proof": "optional"``. A directory that resolves replaces the keys kept for it, so a key
removed there stops verifying here; one that fails keeps the last good keys.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from http_message_signatures import HTTPMessageSignaturesException, InvalidSignature

from guard.identity.signatures import (
    MEDIA_TYPE,
    SKEW,
    TEST_KEYS,
    WELL_KNOWN,
    FieldLines,
    KeyVerifier,
    RequestView,
    directory_id,
    ed25519_key,
    parse_field,
)

#: The ``tag`` of a directory's own signatures.
DIRECTORY_TAG = "http-message-signatures-directory"
#: A larger directory (after content decoding) is refused.
MAX_BYTES = 64 * 1024
#: A directory with more keys than this is refused.
MAX_KEYS = 32
#: What a directory away from the well-known URI may be served as (a plain JWK Set).
JSON_TYPES = frozenset({MEDIA_TYPE, "application/jwk-set+json", "application/json"})
#: Components a directory signature must cover (the draft's appendix B.1).
PROOF_COMPONENTS = ('"@authority";req', "content-digest")

Resolve = Callable[[str], Sequence[str]]


class DirectoryError(Exception):
    """The directory could not be fetched or is not usable; nothing of it is kept."""


@dataclass(frozen=True, slots=True)
class Directory:
    """What a fetched directory yields: the JWKs adopted, those proven, what was dropped and why."""

    keys: tuple[dict[str, Any], ...]
    proven: frozenset[str]
    dropped: tuple[str, ...] = ()


def public_addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to (a blocking lookup: this runs in a command)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)]


def check_target(url: str, resolve: Resolve = public_addresses) -> str:
    """``url``'s host when it is an https URL whose addresses are all public; else DirectoryError."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme != "https" or not host:
        raise DirectoryError(f"{url} is not an https URL")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host)]
        except (OSError, ValueError) as exc:
            raise DirectoryError(f"{host} does not resolve: {exc}") from None
    private = [str(a) for a in addresses if not a.is_global]
    if not addresses or private:
        raise DirectoryError(f"{host} resolves to a non-public address {', '.join(private)}")
    return host


def fetch_directory(
    url: str,
    client: httpx.Client,
    *,
    now: float,
    require_proof: bool = True,
    allow_test_keys: bool = False,
    resolve: Resolve = public_addresses,
) -> Directory:
    """Fetch and check the key directory at ``url`` (see the module docstring)."""
    check_target(url, resolve)
    request_headers = {"accept": MEDIA_TYPE, "accept-encoding": "identity"}
    try:
        with client.stream("GET", url, headers=request_headers, follow_redirects=False) as response:
            if response.status_code != 200:
                raise DirectoryError(
                    f"HTTP {response.status_code} (only 200 is a directory; redirects are not followed)"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise DirectoryError(f"larger than {MAX_BYTES} bytes")
            headers = list(response.headers.multi_items())
    except httpx.HTTPError as exc:
        raise DirectoryError(f"{type(exc).__name__}: {exc}") from None
    media = dict(headers).get("content-type", "").split(";")[0].strip().lower()
    well_known = urlsplit(url).path == WELL_KNOWN
    if media != MEDIA_TYPE and (well_known or media not in JSON_TYPES):
        raise DirectoryError(f"served as {media or 'nothing'!r}, not {MEDIA_TYPE}")
    return read_directory(
        url, bytes(body), headers, now=now, require_proof=require_proof, allow_test_keys=allow_test_keys
    )


def read_directory(
    url: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    *,
    now: float,
    require_proof: bool = True,
    allow_test_keys: bool = False,
) -> Directory:
    """Check a directory response: its JWK Set and each key's signature over it."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DirectoryError(f"not JSON: {exc}") from None
    jwks = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(jwks, list):
        raise DirectoryError("not a JWK Set (no keys list)")
    if len(jwks) > MAX_KEYS:
        raise DirectoryError(f"{len(jwks)} keys, more than {MAX_KEYS}")
    keys: dict[str, dict[str, Any]] = {}
    dropped = []
    for jwk in jwks:
        try:
            parsed = ed25519_key(jwk)
        except ValueError as exc:
            dropped.append(f"malformed key: {exc}")
            continue
        if parsed is None:
            dropped.append(f"not an Ed25519 key: {str(jwk.get('kty') if isinstance(jwk, dict) else jwk)[:40]}")
            continue
        thumbprint = parsed[0]
        if "kid" in jwk and jwk["kid"] != thumbprint:
            dropped.append(f"kid {str(jwk['kid'])[:60]!r} is not the key's thumbprint {thumbprint}")
            continue
        if jwk["x"] in TEST_KEYS and not allow_test_keys:
            dropped.append(f"{thumbprint} is RFC 9421's public test key")
            continue
        public = {name: jwk[name] for name in ("kty", "crv", "x", "nbf", "exp") if name in jwk}
        keys[thumbprint] = {**public, "kid": thumbprint}
    proven = _proofs(url, body, headers, keys, now)
    if require_proof:
        for thumbprint in sorted(set(keys) - proven):
            dropped.append(f"{thumbprint} did not sign the directory")
        keys = {k: v for k, v in keys.items() if k in proven}
    if not keys:
        raise DirectoryError("no usable key: " + ("; ".join(dropped) or "the set is empty"))
    return Directory(tuple(keys.values()), frozenset(proven), tuple(dropped))


def _proofs(
    url: str, body: bytes, headers: Sequence[tuple[str, str]], keys: Mapping[str, Mapping[str, Any]], now: float
) -> set[str]:
    """The thumbprints of ``keys`` whose directory signature over this response holds."""
    fields = [value for name, value in headers if name.lower() == "signature-input"]
    try:
        inputs = parse_field(", ".join(fields), "dictionary") if fields else {}
    except ValueError:
        return set()
    response = _Response(200, FieldLines(headers), RequestView("GET", url, FieldLines(())))
    proven = set()
    for label, (_, params) in inputs.items():
        keyid = params.get("keyid")
        if params.get("tag") != DIRECTORY_TAG or keyid not in keys:
            continue
        created, expires = params.get("created"), params.get("expires")
        if type(created) is not int or type(expires) is not int or created > now + SKEW or expires <= now:
            continue  # the draft: never a proof dated in the future; and an expired one proves nothing now
        parsed = ed25519_key(keys[keyid])
        assert parsed is not None
        try:
            KeyVerifier(keyid, parsed[1].key).verify(
                response,
                expect_tag=DIRECTORY_TAG,
                expect_label=label,
                max_age=None,
                require_components=PROOF_COMPONENTS,
                body=body,
            )
        except (InvalidSignature, HTTPMessageSignaturesException):
            continue
        proven.add(keyid)
    return proven


@dataclass(frozen=True, slots=True)
class _Response:
    """A response as the library reads it (its request gives the ``;req`` components)."""

    status_code: int
    headers: FieldLines
    request: RequestView


class SignersReport(dict[str, str]):
    """``{entry: outcome}`` of :func:`update_signers`: ``updated: ...``, ``kept: why`` or ``skipped``."""

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.items() if outcome.startswith("kept")]

    def summary(self, path: str | Path) -> str:
        updated = sum(1 for outcome in self.values() if outcome.startswith("updated"))
        text = f"update-signers: {updated} of {len(self)} key directories updated in {path}"
        if self.failed:
            text += f"; {len(self.failed)} failed and kept their last good keys"
        return text


def update_signers(
    path: str | Path,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    now: Callable[[], float] = time.time,
    resolve: Resolve = public_addresses,
    allow_test_keys: bool = False,
    log: Callable[[str], None] = print,
) -> SignersReport:
    """Refresh every entry of the signer file at ``path`` from its key directory.

    Entries with ``"fetch": false`` are left as they are. The file is rewritten at once
    (a temporary file renamed) and only when a directory was updated.
    """
    target = Path(path)
    doc = json.loads(target.read_text(encoding="utf-8"))
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    report = SignersReport()
    try:
        for name, entry in doc.items():
            if not isinstance(entry, dict) or entry.get("fetch", True) is False:
                report[name] = "skipped"
                continue
            url = entry.get("url") or directory_id(name) or name
            try:
                directory = fetch_directory(
                    url,
                    http,
                    now=now(),
                    require_proof=entry.get("proof", "required") != "optional",
                    allow_test_keys=allow_test_keys,
                    resolve=resolve,
                )
            except DirectoryError as exc:
                report[name] = f"kept: {exc}"
                log(f"{name}: {url} failed ({exc}); kept the last good keys")
                continue
            entry["keys"] = list(directory.keys)
            entry["fetched"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now()))
            report[name] = f"updated: {len(directory.keys)} keys ({len(directory.proven)} proven)"
            log(f"{name}: {url}: {report[name]}" + "".join(f"; dropped {why}" for why in directory.dropped))
    finally:
        if own:
            http.close()
    if any(outcome.startswith("updated") for outcome in report.values()):
        temporary = target.with_suffix(target.suffix + ".tmp")
        temporary.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        temporary.replace(target)  # atomic: the reloader never sees half a file
    return report
