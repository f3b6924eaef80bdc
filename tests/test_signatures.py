"""Signed agents (Web Bot Auth, RFC 9421 HTTP Message Signatures with Ed25519)."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import CHROME, FakeClock, Visitor, run

from guard.demo.app import create_app
from guard.identity.signatures import jwk_thumbprint, signature_base

# RFC 9421 appendix B.1.4 (test-key-ed25519) and B.2.6 (its signature over the test request).
RFC_SEED = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
RFC_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
B26_INPUT = (
    '("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
SIGNER = "https://crawler.search.example"


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc9421_b26_signature_base_and_signature() -> None:
    headers = {
        "date": ["Tue, 20 Apr 2021 02:07:55 GMT"],
        "content-type": ["application/json"],
        "content-length": ["18"],
    }
    base = signature_base(
        ["date", "@method", "@path", "@authority", "content-type", "content-length"],
        B26_INPUT,
        headers,
        method="POST",
        authority="example.com",
        path="/foo",
        query="param=Value&Pet=dog",
    )
    assert base == (
        '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n"@authority": example.com\n'
        '"content-type": application/json\n"content-length": 18\n"@signature-params": ' + B26_INPUT
    )
    key = Ed25519PrivateKey.from_private_bytes(unb64url(RFC_SEED))
    assert base64.b64encode(key.sign(base.encode())).decode() == B26_SIGNATURE  # Ed25519 is deterministic
    assert key.public_key().public_bytes_raw() == unb64url(RFC_X)  # the public half the directory holds


@pytest.fixture
def signed_app(policy, tmp_path: Path):
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC_X}
    directory = tmp_path / "signers.json"
    directory.write_text(json.dumps({SIGNER: {"agent": "Googlebot", "keys": [jwk]}}))
    clock = FakeClock()
    configured = dataclasses.replace(policy, signatures_file=str(directory), _plans={})
    return create_app(configured, clock=clock), clock, jwk_thumbprint(jwk)


def sign(
    now: float,
    keyid: str,
    *,
    authority: str = "testserver",
    lifetime: int = 300,
    agent: str = SIGNER,
    key: str = RFC_SEED,
) -> dict[str, str]:
    created, expires = int(now), int(now) + lifetime
    params = (
        f'("@authority" "signature-agent");created={created};expires={expires};keyid="{keyid}";'
        f'alg="ed25519";tag="web-bot-auth"'
    )
    headers = {"signature-agent": [f'"{agent}"']}
    base = signature_base(
        ["@authority", "signature-agent"], params, headers, method="GET", authority=authority, path="/", query=""
    )
    signature = Ed25519PrivateKey.from_private_bytes(unb64url(key)).sign(base.encode())
    return {
        "signature-agent": f'"{agent}"',
        "signature-input": f"sig1={params}",
        "signature": f"sig1=:{base64.b64encode(signature).decode()}:",
    }


def test_a_signed_request_verifies_and_proves_the_agent(signed_app) -> None:
    app, clock, keyid = signed_app
    # A browser-looking UA from an address outside Google's ranges: only the signature speaks.
    visitor = Visitor(app, "203.0.113.80", CHROME)
    headers = sign(clock(), keyid)

    async def main() -> None:
        for track in range(1, 100):  # verified search engine: pages allowed and never counted
            assert (await visitor.get(f"/tracks/{track}", headers=headers)).status_code == 200
        audio = await visitor.get("/tracks/1/stream", headers=headers)
        assert audio.status_code == 403 and "search-engine-content" in audio.text

    run(main())


@pytest.mark.parametrize("trouble", ["tampered", "expired", "other authority", "wrong key", "too long"])
def test_a_tampered_or_expired_signature_does_not_verify(signed_app, trouble: str) -> None:
    app, clock, keyid = signed_app
    other_key = base64.urlsafe_b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode().rstrip("=")
    headers = {
        "tampered": lambda: {**sign(clock(), keyid), "signature-agent": '"https://evil.example"'},
        "expired": lambda: sign(clock() - 3600, keyid),
        "other authority": lambda: sign(clock(), keyid, authority="elsewhere.example"),
        "wrong key": lambda: sign(clock(), keyid, key=other_key),
        "too long": lambda: sign(clock(), keyid, lifetime=7 * 86400),
    }[trouble]()
    r = run(Visitor(app, "203.0.113.81", CHROME).get("/tracks/1", headers=headers))
    if trouble == "tampered":
        assert r.status_code == 200  # names an unknown signer: no claim, judged by its UA (a browser)
    else:
        assert r.status_code == 403 and "spoofed-bot" in r.text


def test_malformed_signature_headers_never_raise(signed_app) -> None:
    app, clock, keyid = signed_app
    visitor = Visitor(app, "203.0.113.82", CHROME)

    async def main() -> None:
        for junk in (
            {"signature-input": "sig1=(", "signature": "sig1=:!!:"},
            {"signature-input": 'sig1=("@authority");tag="web-bot-auth"', "signature": "sig1=:AAAA:"},
            {"signature-input": "===", "signature": ""},
            {**sign(clock(), keyid), "signature": "sig1=:bm90IGJhc2U2NA:"},
        ):
            assert (await visitor.get("/tracks/1", headers=junk)).status_code in (200, 403)

    run(main())
