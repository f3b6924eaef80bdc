"""Private Access Tokens over real HTTP: during a sweep, a young session is asked for a token
(``WWW-Authenticate: PrivateToken``), and one from a configured issuer lets it through.

The issuer here is the test's own: an RSA-2048 key made in the test, and tokens built from
the challenge the guard sent, byte by byte per RFC 9577, their authenticator an RSASSA-PSS
(SHA-384, 48-byte salt) signature over the token input: what a finalized RFC 9474 blind
signature verifies as.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from support import RULES, FakeClock, Site, serving

from guard.demo.app import create_app
from guard.errors import ConfigError
from guard.policy.rules import load_rules
from guard.sessions import SessionKeys
from guard.sessions.tokens import SessionCodec

KEY = "t" * 40
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 128 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + body


SHA384 = der(0x30, bytes.fromhex("0609608648016503040202") + b"\x05\x00")
#: id-RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt: how issuers publish their keys.
PSS_ALGORITHM = der(
    0x30,
    bytes.fromhex("06092a864886f70d01010a")
    + der(
        0x30,
        der(0xA0, SHA384)
        + der(0xA1, der(0x30, bytes.fromhex("06092a864886f70d010108") + SHA384))
        + der(0xA2, b"\x02\x01\x30"),
    ),
)


class LocalIssuer:
    """A Privacy Pass issuer of publicly verifiable tokens (type 0x0002)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pkcs1 = self.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        self.spki = der(0x30, PSS_ALGORITHM + der(0x03, b"\x00" + pkcs1))

    @property
    def token_key(self) -> str:
        return b64(self.spki)

    def token(self, challenge: bytes, *, signer: rsa.RSAPrivateKey | None = None, nonce: bytes | None = None) -> str:
        token_input = (
            struct.pack("!H", 2)
            + (nonce or os.urandom(32))
            + hashlib.sha256(challenge).digest()
            + hashlib.sha256(self.spki).digest()
        )
        authenticator = (signer or self.key).sign(token_input, PSS, hashes.SHA384())
        return f'PrivateToken token="{b64(token_input + authenticator)}"'


def parse_challenge(value: str) -> tuple[bytes, str]:
    """The first offer of a WWW-Authenticate: PrivateToken header: (TokenChallenge, token-key)."""
    match = re.match(r'PrivateToken challenge="([^"]+)", token-key="([^"]+)"', value)
    assert match, value
    return unb64(match.group(1)), match.group(2)


def challenge_fields(challenge: bytes) -> tuple[int, str, bytes, str]:
    token_type, name_length = struct.unpack("!HH", challenge[:4])
    name = challenge[4 : 4 + name_length].decode()
    rest = challenge[4 + name_length :]
    context = rest[1 : 1 + rest[0]]
    rest = rest[1 + rest[0] :]
    (origin_length,) = struct.unpack("!H", rest[:2])
    return token_type, name, context, rest[2 : 2 + origin_length].decode()


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    return LocalIssuer("issuer.test")


def rules_file(tmp_path: Path, issuer: LocalIssuer, sweep: bool = True) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"version: 1\nextends: {RULES}\n"
        "private_tokens:\n"
        f"  issuers: [{{name: {issuer.name}, token_key: {issuer.token_key}}}]\n"
        "  paths: [audio]\n  young: 1h\n  origin: music.test\n  window: 5m\n"
        f"  sweep: {'true' if sweep else 'false'}\n"
        "rules: []\n"
    )
    return path


@pytest.fixture
def site(tmp_path: Path, issuer: LocalIssuer) -> Iterator[Site]:
    clock = FakeClock()
    app = create_app(
        load_rules(rules_file(tmp_path, issuer)),
        clock=clock,
        trusted_proxies=["127.0.0.1/32"],
        session_keys=SessionKeys(KEY),
    )
    with serving(app) as base:
        yield Site(base, clock, app)


def test_a_young_session_in_a_sweep_is_asked_for_a_token_and_one_lets_it_through(site: Site, issuer) -> None:
    listener = site.browser(ip="198.51.100.7")
    assert listener.page().status_code == 200 and listener.token  # a new session: young
    asked = listener.audio()
    assert asked.status_code == 401 and not asked.content.startswith(b"ID3")
    challenge, token_key = parse_challenge(asked.headers["www-authenticate"])
    assert token_key == issuer.token_key
    token_type, name, context, origin = challenge_fields(challenge)
    assert (token_type, name, len(context), origin) == (2, "issuer.test", 32, "music.test")

    served = listener.audio(authorization=issuer.token(challenge))
    assert served.status_code == 206 and served.content
    session = SessionCodec(SessionKeys(KEY)).loads(listener.token or "")
    assert session is not None and session.level(site.clock()) == "proven"
    assert listener.audio().status_code == 206  # proven: no token needed again


def test_no_token_a_bad_one_or_a_spent_one_is_escalated(site: Site, issuer) -> None:
    first, second = site.browser(ip="198.51.100.7"), site.browser(ip="203.0.113.9")
    for browser in (first, second):
        browser.page()
    challenge, _ = parse_challenge(first.audio().headers["www-authenticate"])
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = LocalIssuer("other.test")
    nonce = os.urandom(32)
    refused = [
        issuer.token(challenge, signer=forger),  # claims the issuer's key id, signed by another key
        other.token(challenge),  # an issuer not configured
        issuer.token(challenge.replace(b"music.test", b"other.test")),  # another origin's challenge
        'PrivateToken token="not base64 at all!"',
        "Bearer abc",
    ]
    for authorization in refused:
        assert first.audio(authorization=authorization).status_code == 401, authorization
    assert first.audio(authorization=issuer.token(challenge, nonce=nonce)).status_code == 206
    replayed = second.audio(authorization=issuer.token(challenge, nonce=nonce))  # same nonce: spent
    assert replayed.status_code == 401


def test_a_token_answers_a_recent_challenge_only(site: Site, issuer) -> None:
    listener = site.browser()
    listener.page()
    challenge, _ = parse_challenge(listener.audio().headers["www-authenticate"])
    site.clock.advance(7 * 60)  # the previous window: still accepted
    assert listener.audio(authorization=issuer.token(challenge)).status_code == 206
    late = site.browser(ip="203.0.113.50")
    late.page()
    site.clock.advance(12 * 60)  # two windows on: stale
    assert late.audio(authorization=issuer.token(challenge)).status_code == 401


def test_a_page_load_in_a_sweep_gets_the_interstitial_with_the_token_offer(site: Site) -> None:
    listener = site.browser()
    listener.page()
    r = listener.get("/tracks/7/stream", sec_fetch_mode="navigate", accept="text/html")
    assert r.status_code == 401 and "text/html" in r.headers["content-type"]
    assert r.headers["www-authenticate"].startswith("PrivateToken challenge=")
    assert r.headers["x-guard-challenge"] == "proof-of-work"  # the token is one way past; the proof another


def test_older_sessions_and_quiet_times_are_not_escalated(site: Site) -> None:
    listener = site.browser()
    listener.page()
    site.app.sweeping = lambda: False  # the sweep detector's hook: no sweep now
    assert listener.audio().status_code == 206
    site.app.sweeping = lambda: True
    assert listener.audio().status_code == 401
    site.clock.advance(3601)  # an hour old: no longer young
    assert listener.audio().status_code == 206


def test_the_sweep_hook_overrides_the_rules_setting(tmp_path: Path, issuer) -> None:
    clock = FakeClock()
    app = create_app(
        load_rules(rules_file(tmp_path, issuer, sweep=False)),
        clock=clock,
        trusted_proxies=["127.0.0.1/32"],
        session_keys=SessionKeys(KEY),
    )
    with serving(app) as base:
        site = Site(base, clock, app)
        listener = site.browser()
        listener.page()
        assert listener.audio().status_code == 206
        app.sweeping = lambda: True
        assert listener.audio().status_code == 401


def test_a_token_key_that_is_not_an_rsa_2048_key_is_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    spki = small.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"version: 1\nextends: {RULES}\nprivate_tokens:\n"
        f"  issuers: [{{name: a.test, token_key: {b64(spki)}}}, {{name: b.test, token_key: QUJDREVGR0hJSktMTU5PUA}}]\n"
        "  paths: [audio]\nrules: []\n"
    )
    with pytest.raises(ConfigError) as error:
        load_rules(path)
    text = str(error.value)
    assert "rules.yaml:4" in text and "not a 2048-bit RSA key" in text and "not a public key" in text
