"""Key directories: fetched by ``guard update-signers`` (never per request), checked, signed by the agent.

No test leaves the process: directories are served by ``httpx.MockTransport`` and host
names resolve through a stand-in, so every refusal below is guard's own.
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from support import RFC_X, web_bot_auth

from guard.identity.keydirectory import (
    DIRECTORY_TAG,
    MAX_BYTES,
    MAX_KEYS,
    DirectoryError,
    fetch_directory,
    update_signers,
)
from guard.identity.signatures import MEDIA_TYPE, Outcome, SignatureVerifier, SignedRequest, jwk_thumbprint

NOW = 1_800_000_000.0
AGENT = "https://crawler.search.example"
WELL_KNOWN_URL = f"{AGENT}/.well-known/http-message-signatures-directory"
PUBLIC = "93.184.215.14"


def public(host: str) -> list[str]:
    return [PUBLIC]


def new_key() -> tuple[str, Ed25519PrivateKey, dict[str, str]]:
    private = Ed25519PrivateKey.generate()
    seed = base64.urlsafe_b64encode(private.private_bytes_raw()).rstrip(b"=").decode()
    x = base64.urlsafe_b64encode(private.public_key().public_bytes_raw()).rstrip(b"=").decode()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": x}
    return seed, private, {**jwk, "kid": jwk_thumbprint(jwk)}


def signed_directory(
    url: str,
    jwks: list[dict],
    signers: list[tuple[Ed25519PrivateKey, dict]],
    *,
    created: float = NOW - 60,
    lifetime: int = 86400 * 30,
    authority_url: str | None = None,
    media: str = MEDIA_TYPE,
) -> httpx.Response:
    """A directory response signed by each of ``signers`` with the http-message-signatures library."""
    body = json.dumps({"keys": jwks}, separators=(",", ":")).encode()

    class Request:
        method, headers = "GET", {}

        def __init__(self) -> None:
            self.url = authority_url or url

    class Response:
        status_code = 200

        def __init__(self) -> None:
            self.headers: dict[str, str] = {"content-type": media}
            self.request = Request()

    response = Response()
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    for index, (private, jwk) in enumerate(signers):
        keyid = jwk_thumbprint(jwk)
        HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={keyid: private}),
        ).sign(
            response,
            key_id=keyid,
            created=moment,
            expires=moment + datetime.timedelta(seconds=lifetime),
            label=f"binding{index}",
            tag=DIRECTORY_TAG,
            include_alg=False,
            covered_component_ids=('"@authority";req',),
            body=body,
            use_existing_digest=index > 0,
            append_if_signature_exists=index > 0,
        )
    return httpx.Response(200, headers=response.headers, content=body)


def serve(*responses: httpx.Response | Exception) -> tuple[httpx.Client, list[str]]:
    """A client whose transport answers with ``responses`` in turn, recording the URLs asked."""
    asked: list[str] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(transport=httpx.MockTransport(handler)), asked


def fetch(response: httpx.Response, url: str = WELL_KNOWN_URL, **options):
    client, asked = serve(response)
    return fetch_directory(url, client, now=NOW, resolve=options.pop("resolve", public), **options), asked


# -- the draft's signed directory vector (appendix E.2.3) ------------------------------------------

VECTOR_BODY = (
    b'{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U",'
    b'"x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs","use":"sig"}]}'
)
VECTOR_HEADERS = {
    "content-type": MEDIA_TYPE,
    "content-digest": "sha-256=:CADMT2aBdV/rqQr/NIru64ERQkCobVvllA4V0fLFDu0=:",
    "signature-input": 'binding=("@authority";req "content-digest");created=1735689600;expires=4889289600;'
    'keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";tag="http-message-signatures-directory"',
    "signature": "binding=:l6P8R67tm3kujAxbHWio7ll01qrEZ0dKD/WWlGhNYEmTnFZM8Wt0VQ9zqGfvo7T/UMkBxsigzChM1Gpz7gOVBg==:",
}
VECTOR_URL = "https://signature-agent.test/.well-known/http-message-signatures-directory"


def test_the_drafts_signed_directory_vector_is_proven() -> None:
    directory, asked = fetch(
        httpx.Response(200, headers=VECTOR_HEADERS, content=VECTOR_BODY), VECTOR_URL, allow_test_keys=True
    )
    assert asked == [VECTOR_URL]
    assert directory.proven == {"poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"}
    assert [key["x"] for key in directory.keys] == [RFC_X]


def test_the_drafts_vector_is_refused_for_its_public_test_key_and_when_edited() -> None:
    with pytest.raises(DirectoryError, match="public test key"):
        fetch(httpx.Response(200, headers=VECTOR_HEADERS, content=VECTOR_BODY), VECTOR_URL)
    edited = VECTOR_BODY.replace(b'"use":"sig"', b'"use":"enc"')  # the digest no longer matches
    with pytest.raises(DirectoryError, match="did not sign"):
        fetch(httpx.Response(200, headers=VECTOR_HEADERS, content=edited), VECTOR_URL, allow_test_keys=True)
    elsewhere = VECTOR_URL.replace("signature-agent.test", "mirror.example")  # re-served under another authority
    with pytest.raises(DirectoryError, match="did not sign"):
        fetch(httpx.Response(200, headers=VECTOR_HEADERS, content=VECTOR_BODY), elsewhere, allow_test_keys=True)


# -- proofs ----------------------------------------------------------------------------------------


def test_each_key_is_adopted_only_with_its_own_signature_over_the_directory() -> None:
    _, private_a, jwk_a = new_key()
    _, private_b, jwk_b = new_key()
    directory, _ = fetch(signed_directory(WELL_KNOWN_URL, [jwk_a, jwk_b], [(private_a, jwk_a)]))
    assert [key["kid"] for key in directory.keys] == [jwk_a["kid"]]
    assert any("did not sign" in why for why in directory.dropped)
    both, _ = fetch(signed_directory(WELL_KNOWN_URL, [jwk_a, jwk_b], [(private_a, jwk_a), (private_b, jwk_b)]))
    assert both.proven == {jwk_a["kid"], jwk_b["kid"]}
    optional, _ = fetch(signed_directory(WELL_KNOWN_URL, [jwk_a, jwk_b], []), require_proof=False)
    assert len(optional.keys) == 2 and not optional.proven


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"created": NOW + 3600}, "dated in the future"),
        ({"created": NOW - 90 * 86400, "lifetime": 86400}, "expired"),
        ({"authority_url": "https://mirror.example/.well-known/http-message-signatures-directory"}, "other authority"),
    ],
)
def test_a_proof_from_the_future_expired_or_for_another_authority_proves_nothing(options: dict, why: str) -> None:
    _, private, jwk = new_key()
    with pytest.raises(DirectoryError, match="did not sign"):
        fetch(signed_directory(WELL_KNOWN_URL, [jwk], [(private, jwk)], **options))


def test_a_key_signed_by_another_key_is_not_proven() -> None:
    _, private_a, jwk_a = new_key()
    _, _, jwk_b = new_key()
    # A proof labelled with B's keyid but made with A's key: B never proved possession.
    response = signed_directory(WELL_KNOWN_URL, [jwk_b], [(private_a, jwk_a)])
    headers = dict(response.headers)
    headers["signature-input"] = headers["signature-input"].replace(jwk_a["kid"], jwk_b["kid"])
    with pytest.raises(DirectoryError, match="did not sign"):
        fetch(httpx.Response(200, headers=headers, content=response.content))


# -- the fetch itself ------------------------------------------------------------------------------


def test_redirects_and_other_statuses_are_failures_never_followed() -> None:
    redirect = httpx.Response(302, headers={"location": "https://internal.example/keys"})
    with pytest.raises(DirectoryError, match="HTTP 302"):
        fetch(redirect)
    with pytest.raises(DirectoryError, match="HTTP 404"):
        fetch(httpx.Response(404))


def test_private_addresses_and_plain_http_are_never_contacted() -> None:
    for url, resolve in [
        ("https://169.254.169.254/.well-known/http-message-signatures-directory", public),
        ("https://[::1]/keys.json", public),
        (WELL_KNOWN_URL, lambda host: ["10.0.0.7"]),
        (WELL_KNOWN_URL, lambda host: [PUBLIC, "127.0.0.1"]),
        ("http://crawler.search.example/keys.json", public),
    ]:
        client, asked = serve(httpx.Response(200))
        with pytest.raises(DirectoryError):
            fetch_directory(url, client, now=NOW, resolve=resolve)
        assert asked == [], url


def test_oversized_or_crowded_or_mislabelled_directories_are_refused() -> None:
    _, private, jwk = new_key()
    huge = httpx.Response(200, headers={"content-type": MEDIA_TYPE}, content=b"{" + b" " * MAX_BYTES + b"}")
    with pytest.raises(DirectoryError, match="larger than"):
        fetch(huge)
    crowd = [new_key()[2] for _ in range(MAX_KEYS + 1)]
    with pytest.raises(DirectoryError, match="more than"):
        fetch(signed_directory(WELL_KNOWN_URL, crowd, []))
    with pytest.raises(DirectoryError, match="served as"):
        fetch(signed_directory(WELL_KNOWN_URL, [jwk], [(private, jwk)], media="text/html"))
    json_elsewhere, _ = fetch(
        signed_directory("https://keys.example/jwks.json", [jwk], [(private, jwk)], media="application/json"),
        "https://keys.example/jwks.json",
    )
    assert json_elsewhere.proven == {jwk["kid"]}  # -01: a direct JWK Set URL may be plain JSON
    mislabelled = {**jwk, "kid": "someone-elses-key"}
    with pytest.raises(DirectoryError, match="not the key's thumbprint"):
        fetch(signed_directory(WELL_KNOWN_URL, [mislabelled], [(private, jwk)]))
    for junk in (b"not json", b"[]", b'{"keys": "x"}'):
        with pytest.raises(DirectoryError):
            fetch(httpx.Response(200, headers={"content-type": MEDIA_TYPE}, content=junk))


# -- the signer file, end to end -------------------------------------------------------------------


def test_update_signers_rotates_keys_and_the_verifier_follows(tmp_path: Path) -> None:
    old_seed, _, old_jwk = new_key()
    new_seed, new_private, new_jwk = new_key()
    file = tmp_path / "signers.json"
    file.write_text(
        json.dumps(
            {
                AGENT: {"agent": "Googlebot", "keys": [old_jwk]},
                "https://hand.example": {"agent": "Bingbot", "fetch": False},
            }
        )
    )
    client, asked = serve(signed_directory(WELL_KNOWN_URL, [new_jwk], [(new_private, new_jwk)]))
    report = update_signers(file, client=client, now=lambda: NOW, resolve=public, log=lambda line: None)
    assert asked == [WELL_KNOWN_URL]
    assert report == {AGENT: "updated: 1 keys (1 proven)", "https://hand.example": "skipped"}
    written = json.loads(file.read_text())
    assert [key["x"] for key in written[AGENT]["keys"]] == [new_jwk["x"]]
    verifier = SignatureVerifier.from_file(file)
    assert verifier.check(_request(web_bot_auth(NOW, agent=AGENT, key=new_seed)), NOW).ok
    removed = verifier.check(_request(web_bot_auth(NOW, agent=AGENT, key=old_seed)), NOW)
    assert removed.outcome is Outcome.UNVERIFIED  # the directory dropped it: so does guard


def test_a_failed_refresh_keeps_the_last_good_keys(tmp_path: Path) -> None:
    _, _, jwk = new_key()
    file = tmp_path / "signers.json"
    file.write_text(json.dumps({AGENT: {"agent": "Googlebot", "keys": [jwk]}}))
    before = file.read_text()
    client, _ = serve(httpx.ConnectTimeout("too slow"))
    report = update_signers(file, client=client, now=lambda: NOW, resolve=public, log=lambda line: None)
    assert report[AGENT].startswith("kept: ConnectTimeout")
    assert report.summary(file).endswith("1 failed and kept their last good keys")
    assert file.read_text() == before


def _request(headers: dict[str, str]) -> SignedRequest:
    return SignedRequest([("host", "testserver"), *headers.items()], "GET", "testserver", "/", "")
