"""Signed agents: Web Bot Auth (draft-ietf-webbotauth-httpsig-protocol-01) over RFC 9421, Ed25519.

Every signed request here comes from an independent implementation: the draft's own test
vectors, or the ``http-message-signatures`` library's signer (``support.web_bot_auth``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CHROME, RFC_X, FakeClock, Visitor, run, web_bot_auth

from guard.demo.app import create_app
from guard.identity.signatures import (
    MAX_FIELD,
    Outcome,
    SignatureVerifier,
    SignedRequest,
    Signer,
    directory_id,
    ed25519_key,
    jwk_thumbprint,
)

SIGNER = "https://crawler.search.example"
OTHER = "https://other-crawler.example/keys.json"
RFC_JWK = {"kty": "OKP", "crv": "Ed25519", "x": RFC_X}
RFC_KEYID = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
NOW = 1_800_000_000.0


def new_key() -> tuple[str, dict[str, str]]:
    """A fresh Ed25519 key: (base64url seed, public JWK)."""
    private = Ed25519PrivateKey.generate()
    seed = base64.urlsafe_b64encode(private.private_bytes_raw()).rstrip(b"=").decode()
    x = base64.urlsafe_b64encode(private.public_key().public_bytes_raw()).rstrip(b"=").decode()
    return seed, {"kty": "OKP", "crv": "Ed25519", "x": x}


OTHER_SEED, OTHER_JWK = new_key()


def signer(agent: str, *jwks: dict) -> Signer:
    keys = dict(parsed for jwk in jwks if (parsed := ed25519_key(jwk)) is not None)
    return Signer(agent, keys)


def verifier(**options) -> SignatureVerifier:
    return SignatureVerifier({SIGNER: signer("Googlebot", RFC_JWK), OTHER: signer("GPTBot", OTHER_JWK)}, **options)


def request(headers: dict[str, str], *, authority: str = "testserver", path: str = "/", method: str = "GET"):
    return SignedRequest([("host", authority), *headers.items()], method, authority, path, "")


# -- the draft's test vectors (appendix E.2, Ed25519 over RFC 9421's test request) ----------------

VECTOR_REQUEST = dict(authority="example.com", path="/foo", method="POST")
VECTOR_DICTIONARY = {  # E.2.1: the draft's form
    "signature-agent": 'agent2="https://signature-agent.test"',
    "signature-input": 'sig2=("@authority" "signature-agent";key="agent2");created=1735689600;'
    f'keyid="{RFC_KEYID}";alg="ed25519";expires=4889289600;'
    'nonce="n9p433xm+NJ3ph3upfBIGmsuwHw387YV7Q/F+6BSpGCVjYCqQw6rznNA8PVVLySrAWsv0hQtFioQb6E1YsauiA==";'
    'tag="web-bot-auth"',
    "signature": "sig2=:RdNFx5Bj6au3YgAMQL/RzmUlZE8QZLIaXGRpw985hWnwPfMxT228NMk6ehRS1PSl4e8PhbNZACSanGdhEwYCCg==:",
}
VECTOR_STRING = {  # E.2.2: the legacy bare-string Signature-Agent
    "signature-agent": '"https://signature-agent.test"',
    "signature-input": 'sig2=("@authority" "signature-agent");created=1735689600;'
    f'keyid="{RFC_KEYID}";alg="ed25519";expires=1735693200;'
    'nonce="e8N7S2MFd/qrd6T2R3tdfAuuANngKI7LFtKYI/vowzk4lAZYadIX6wW25MwG7DCT9RUKAJ0qVkU0mEeLElW1qg==";'
    'tag="web-bot-auth"',
    "signature": "sig2=:jdq0SqOwHdyHr9+r5jw3iYZH6aNGKijYp/EstF4RQTQdi5N5YYKrD+mCT1HA1nZDsi6nJKuHxUi/5Syp3rLWBA==:",
}


VECTOR_NO_AGENT = {  # cloudflare/web-bot-auth's web_bot_auth_architecture_v2.json: no Signature-Agent
    "signature-input": 'sig1=("@authority");created=1735689600;'
    f'keyid="{RFC_KEYID}";alg="ed25519";expires=4889289600;'
    'nonce="zIW8+cdmA3vdYagbxojpONwa/l0EKJ/O3/wD486VvsQjO/RxPaSt6ZxvQaMcQzNnqKN/mQ6hpGiFro2L2qkz5A==";'
    'tag="web-bot-auth"',
    "signature": "sig1=:QKN4fTdIYfh82fvoZCQiQA1weuozfCS/Led2zTMbewMMqH8PI2Wsy/5c4ao6B6D09nraNQdBNOADg8aM1MqfCg==:",
}


def vector_verifier(**options) -> SignatureVerifier:
    return SignatureVerifier({"https://signature-agent.test": signer("Googlebot", RFC_JWK)}, **options)


def test_the_drafts_dictionary_vector_verifies() -> None:
    assert jwk_thumbprint(RFC_JWK) == RFC_KEYID
    # Its expires is 100 years out "so that they do not age": only with a longer window than guard's.
    check = vector_verifier(max_validity=2**40).check(request(VECTOR_DICTIONARY, **VECTOR_REQUEST), 1735689700)
    assert check.outcome is Outcome.VERIFIED and check.agent == "Googlebot" and not check.legacy
    assert check.signer == "https://signature-agent.test/.well-known/http-message-signatures-directory"
    refused = vector_verifier().check(request(VECTOR_DICTIONARY, **VECTOR_REQUEST), 1735689700)
    assert (refused.outcome, refused.reason) == (Outcome.INVALID, "validity window too long")


def test_the_drafts_legacy_string_vector_verifies_this_release_only() -> None:
    check = vector_verifier().check(request(VECTOR_STRING, **VECTOR_REQUEST), 1735689700)
    assert check.outcome is Outcome.VERIFIED and check.legacy
    later = vector_verifier(legacy=False).check(request(VECTOR_STRING, **VECTOR_REQUEST), 1735689700)
    assert later.outcome is Outcome.UNVERIFIED


def test_a_vector_without_signature_agent_verifies_by_its_key_this_release_only() -> None:
    vector = request(VECTOR_NO_AGENT, authority="example.com", path="/path/to/resource")
    check = vector_verifier(max_validity=2**40).check(vector, 1735689700)
    assert check.outcome is Outcome.VERIFIED and check.legacy
    later = vector_verifier(max_validity=2**40, legacy=False).check(vector, 1735689700)
    assert later.outcome is Outcome.UNVERIFIED  # -01: a signed request must carry Signature-Agent


def test_a_flipped_bit_in_a_vector_is_refuted() -> None:
    headers = {**VECTOR_STRING, "signature": VECTOR_STRING["signature"].replace("jdq0", "jdq1")}
    check = vector_verifier().check(request(headers, **VECTOR_REQUEST), 1735689700)
    assert check.outcome is Outcome.INVALID and check.reason.startswith("bad signature")


# -- forms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dictionary", "string", "whole", "absent"])
def test_each_form_verifies_and_the_older_ones_are_marked_legacy(form: str) -> None:
    headers = web_bot_auth(NOW, agent=SIGNER, form=form)
    check = verifier().check(request(headers), NOW)
    assert check.outcome is Outcome.VERIFIED and check.agent == "Googlebot"
    assert check.legacy is (form != "dictionary")
    strict = verifier(legacy=False).check(request(headers), NOW)
    assert strict.ok is (form == "dictionary")


def test_the_agent_url_and_its_origin_name_the_same_directory() -> None:
    assert directory_id("HTTPS://Crawler.Search.Example:443/?q=1#f") == directory_id(SIGNER)
    assert directory_id(SIGNER) == f"{SIGNER}/.well-known/http-message-signatures-directory"
    for url in ("http://crawler.search.example", "https://user@crawler.search.example", "ftp://x", "https://", "x"):
        assert directory_id(url) is None
    well_known = web_bot_auth(NOW, agent=f"{SIGNER}/.well-known/http-message-signatures-directory")
    assert verifier().check(request(well_known), NOW).ok
    direct = web_bot_auth(NOW, agent=OTHER, key=OTHER_SEED)  # -01: a direct JWK Set URL
    assert verifier().check(request(direct), NOW).agent == "GPTBot"


def test_components_beyond_the_minimum_verify_and_are_reported() -> None:
    headers = web_bot_auth(NOW, components=("@method", "@path"), extra={"crawler-max-price": "USD 0.01"})
    check = verifier().check(request(headers, path="/tracks/1"), NOW)
    assert check.ok is False  # signed for "/" and sent to /tracks/1
    check = verifier().check(request(web_bot_auth(NOW, components=("@path",), path="/tracks/1"), path="/tracks/1"), NOW)
    assert check.ok and {"@authority", "@path"} <= set(check.covered)
    priced = verifier().check(request(web_bot_auth(NOW, extra={"crawler-max-price": "USD 0.01"})), NOW)
    assert priced.ok and "crawler-max-price" in priced.covered


# -- the attacker ----------------------------------------------------------------------------------


def test_a_replayed_nonce_proves_nothing_the_second_time() -> None:
    checker = verifier()
    headers = web_bot_auth(NOW, nonce="6aBcQ2")
    assert checker.check(request(headers), NOW).ok
    again = checker.check(request(headers), NOW + 5)
    assert (again.outcome, again.reason) == (Outcome.UNVERIFIED, "replayed nonce")
    # Another nonce from the same signer is fine; a signature without one is reusable until expires.
    assert checker.check(request(web_bot_auth(NOW, nonce="other")), NOW).ok
    plain = web_bot_auth(NOW)
    assert checker.check(request(plain), NOW).ok and checker.check(request(plain), NOW + 5).ok
    assert checker.check(request(plain), NOW + 301 + 60).reason == "expired"


@pytest.mark.parametrize(
    ("headers", "now", "reason"),
    [
        (lambda: web_bot_auth(NOW - 3600), NOW, "expired"),
        (lambda: web_bot_auth(NOW + 600), NOW, "created in the future"),
        (lambda: web_bot_auth(NOW, lifetime=7 * 86400), NOW, "validity window too long"),
        (lambda: web_bot_auth(NOW, lifetime=-10), NOW, "expires before created"),
        (lambda: web_bot_auth(NOW, authority="elsewhere.example"), NOW, "bad signature"),
        (lambda: web_bot_auth(NOW, key=OTHER_SEED, keyid=RFC_KEYID), NOW, "bad signature"),
        (lambda: {**web_bot_auth(NOW), "signature": "sig1=:" + base64.b64encode(bytes(64)).decode() + ":"}, NOW, "bad"),
    ],
    ids=["expired", "future", "too long", "expires before created", "other authority", "forged", "zero signature"],
)
def test_a_known_signers_key_with_a_bad_window_or_signature_is_refuted(headers, now: float, reason: str) -> None:
    check = verifier().check(request(headers()), now)
    assert check.outcome is Outcome.INVALID and check.agent == "Googlebot"
    assert check.reason.startswith(reason)


def test_a_signature_that_does_not_bind_its_agent_or_the_authority_proves_nothing() -> None:
    unbound = web_bot_auth(NOW, form="absent")
    unbound["signature-agent"] = f'sig1="{SIGNER}"'  # added after signing: the signature does not cover it
    check = verifier().check(request(unbound), NOW)
    assert check.outcome is Outcome.UNVERIFIED and "does not cover" in check.reason
    # Once the older forms go, they prove nothing (judged as if unsigned), and are not refuted either.
    strict = verifier(legacy=False).check(request(web_bot_auth(NOW, form="whole")), NOW)
    assert strict.outcome is Outcome.UNVERIFIED
    no_authority = web_bot_auth(NOW, form="absent")
    no_authority["signature-input"] = no_authority["signature-input"].replace('("@authority")', "()")
    assert verifier().check(request(no_authority), NOW).reason == "signature does not cover @authority"


def test_signature_agent_pointing_elsewhere_is_never_fetched_and_proves_nothing(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a request made guard reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for url in ("https://evil.example", "https://169.254.169.254/latest/meta-data", "http://127.0.0.1:6379"):
        check = verifier().check(request(web_bot_auth(NOW, agent=url)), NOW)
        assert check.outcome is Outcome.UNVERIFIED and check.agent is None, url


def test_a_key_is_only_good_for_its_own_directory() -> None:
    # GPTBot's key under Googlebot's URL: (URL, key) pairs, never a key alone.
    borrowed = web_bot_auth(NOW, agent=SIGNER, key=OTHER_SEED)
    check = verifier().check(request(borrowed), NOW)
    assert check.outcome is Outcome.UNVERIFIED and "is not in" in check.reason
    # The signed member swapped for another known signer after signing: that signer lacks the key.
    swapped = {**web_bot_auth(NOW), "signature-agent": f'sig1="{OTHER}"'}
    assert verifier().check(request(swapped), NOW).outcome is Outcome.UNVERIFIED


def test_a_key_outside_its_nbf_or_exp_is_refuted() -> None:
    bounded = {**RFC_JWK, "nbf": NOW + 86400, "exp": NOW + 2 * 86400}
    checker = SignatureVerifier({SIGNER: signer("Googlebot", bounded)})
    assert checker.check(request(web_bot_auth(NOW)), NOW).reason == "key outside its nbf/exp"
    assert checker.check(request(web_bot_auth(NOW + 86400)), NOW + 86400).ok


@pytest.mark.parametrize("field", ["signature-input", "signature", "signature-agent"])
def test_oversized_signature_headers_are_not_parsed(field: str) -> None:
    headers = web_bot_auth(NOW)
    headers[field] += ", " + ", ".join(f'x{i}="{"a" * 60}"' for i in range(MAX_FIELD // 60))
    check = verifier().check(request(headers), NOW)
    assert (check.outcome, check.reason) == (Outcome.UNVERIFIED, "oversized signature headers")


def test_many_signatures_are_checked_only_up_to_a_few() -> None:
    decoys = [web_bot_auth(NOW, label=f"d{i}", agent="https://evil.example") for i in range(6)]
    real = web_bot_auth(NOW, label="real")
    headers = {
        name: ", ".join(part[name] for part in [*decoys, real])
        for name in ("signature-agent", "signature-input", "signature")
    }
    assert verifier().check(request(headers), NOW).outcome is Outcome.UNVERIFIED
    first = {name: ", ".join(part[name] for part in [real, *decoys]) for name in headers}
    assert verifier().check(request(first), NOW).ok  # a valid one among bad ones still verifies


def test_members_with_parameters_or_other_schemes_are_ignored() -> None:
    typed = web_bot_auth(NOW)
    typed["signature-agent"] = f'sig1="{SIGNER}";type=jwks_uri'
    assert verifier().check(request(typed), NOW).outcome is Outcome.UNVERIFIED


@pytest.mark.parametrize(
    "junk",
    [
        {"signature-input": "sig1=(", "signature": "sig1=:!!:"},
        {"signature-input": 'sig1=("@authority");tag="web-bot-auth"', "signature": "sig1=:AAAA:"},
        {"signature-input": 'sig1=("@authority");tag="web-bot-auth";keyid="x";created=1;expires=2', "signature": ""},
        {"signature-input": "===", "signature": ""},
        {"signature-input": 'sig1=("@authority");tag="web-bot-auth"', "signature-agent": "sig1=("},
        {"signature-input": 'sig1=("\u00e9");tag="web-bot-auth";keyid="a"'},
    ],
)
def test_malformed_headers_prove_nothing_and_never_raise(junk: dict[str, str]) -> None:
    check = verifier().check(request(junk), NOW)
    assert check.outcome is Outcome.UNVERIFIED


def test_malformed_signatures_of_a_known_key_never_raise() -> None:
    headers = web_bot_auth(NOW)
    for signature in ("sig1=:bm90IGJhc2U2NA:", "sig1=1", 'sig1="text"', "other=:AAAA:"):
        check = verifier().check(request({**headers, "signature": signature}), NOW)
        assert check.outcome is Outcome.INVALID


# -- through the middleware ------------------------------------------------------------------------


@pytest.fixture
def signed_app(policy, tmp_path: Path):
    directory = tmp_path / "signers.json"
    directory.write_text(json.dumps({SIGNER: {"agent": "Googlebot", "keys": [RFC_JWK]}}))
    clock = FakeClock()
    configured = dataclasses.replace(policy, signatures_file=str(directory), _plans={})
    return create_app(configured, clock=clock), clock


@pytest.mark.parametrize("form", ["dictionary", "string"])
def test_a_signed_request_verifies_and_proves_the_agent(signed_app, form: str) -> None:
    app, clock = signed_app
    # A browser-looking UA from an address outside Google's ranges: only the signature speaks.
    visitor = Visitor(app, "203.0.113.80", CHROME)
    headers = web_bot_auth(clock(), form=form)

    async def main() -> None:
        for track in range(1, 100):  # verified search engine: pages allowed and never counted
            assert (await visitor.get(f"/tracks/{track}", headers=headers)).status_code == 200
        audio = await visitor.get("/tracks/1/stream", headers=headers)
        assert audio.status_code == 403 and "search-engine-content" in audio.text

    run(main())


@pytest.mark.parametrize("trouble", ["elsewhere", "expired", "other authority", "wrong key", "too long", "replayed"])
def test_a_tampered_or_expired_signature_does_not_verify(signed_app, trouble: str) -> None:
    app, clock = signed_app
    headers = {
        "elsewhere": lambda: {**web_bot_auth(clock()), "signature-agent": 'sig1="https://evil.example"'},
        "expired": lambda: web_bot_auth(clock() - 3600),
        "other authority": lambda: web_bot_auth(clock(), authority="elsewhere.example"),
        "wrong key": lambda: web_bot_auth(clock(), key=OTHER_SEED, keyid=RFC_KEYID),
        "too long": lambda: web_bot_auth(clock(), lifetime=7 * 86400),
        "replayed": lambda: web_bot_auth(clock(), nonce="once"),
    }[trouble]()
    visitor = Visitor(app, "203.0.113.81", CHROME)
    if trouble == "replayed":
        assert run(visitor.get("/tracks/1/stream", headers=headers)).status_code == 403  # verified: no audio
    r = run(visitor.get("/tracks/1", headers=headers))
    if trouble in ("elsewhere", "replayed"):
        assert r.status_code == 200  # proves nothing: judged by its UA (a browser), as if unsigned
    else:
        assert r.status_code == 403 and "spoofed-bot" in r.text


def test_malformed_signature_headers_never_raise_through_the_middleware(signed_app) -> None:
    app, clock = signed_app
    visitor = Visitor(app, "203.0.113.82", CHROME)

    async def main() -> None:
        for junk in (
            {"signature-input": "sig1=(", "signature": "sig1=:!!:"},
            {"signature-input": 'sig1=("@authority");tag="web-bot-auth"', "signature": "sig1=:AAAA:"},
            {"signature-input": "===", "signature": ""},
            {**web_bot_auth(clock()), "signature": "sig1=:bm90IGJhc2U2NA:"},
            {**web_bot_auth(clock()), "signature-input": "x" * (MAX_FIELD + 1)},
        ):
            assert (await visitor.get("/tracks/1", headers=junk)).status_code in (200, 403)

    run(main())


def test_a_path_with_characters_urls_do_not_allow_still_verifies() -> None:
    headers = web_bot_auth(NOW)  # covers @authority only: the path does not matter
    assert (
        verifier()
        .check(SignedRequest([("host", "testserver"), *headers.items()], "GET", "testserver", "/a|b c", "q=[1]"), NOW)
        .ok
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["signature-input", "signature", "signature-agent", "host"]),
        st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=300),
    )
)
def test_no_header_text_makes_the_check_raise(headers: dict[str, str]) -> None:
    verifier().check(request({**web_bot_auth(NOW), **headers}), NOW)
