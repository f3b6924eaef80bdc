"""Reading the edge's fingerprint from a request, and what it changes about the request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from guard.fingerprints.catalogue import AUTOMATION, JA4, FingerprintCatalogue
from guard.identity.address import Client
from guard.identity.identify import Identity

if TYPE_CHECKING:
    from guard.policy.engine import Facts

#: Headers edge proxies write, for the rules' ``fingerprints.header`` (any other name may be configured).
KNOWN_HEADERS = {
    "cloudfront": "cloudfront-viewer-ja4-fingerprint",
    "cloudflare": "cf-ja4",  # set by a Worker from request.cf.botManagement.ja4
    "nginx": "x-ja4",  # the ja4-nginx module's $http_ssl_ja4, passed on by proxy_set_header
    "haproxy": "x-ja4",  # a Lua or fetch of the ja4 plugin, set with http-request set-header
    "akamai": "akamai-ja4",
}


def read_fingerprint(headers: Mapping[bytes, bytes], client: Client, header: bytes) -> str | None:
    """The JA4 the trusted proxy reported, or None.

    Only a request a trusted proxy forwarded (its client read from the forwarded header, or
    the proxy's shared bucket) carries one: anyone can write the header straight to guard.
    A value not shaped like a JA4 is ignored (as if absent).
    """
    if not (client.source or client.via):
        return None
    raw = headers.get(header)
    if raw is None or len(raw) > 64:
        return None
    value = raw.decode("latin-1").strip().lower()
    return value if JA4.match(value) else None


def with_fingerprint(client: Client, ja4: str | None, catalogue: FingerprintCatalogue) -> Client:
    """``client`` carrying ``ja4`` when it is rare (no mainstream browser's): what ``key: fingerprint`` counts."""
    if ja4 is None or not catalogue.is_rare(ja4):
        return client
    return dataclasses.replace(client, fingerprint=ja4)


def judge(facts: Facts, ja4: str | None, catalogue: FingerprintCatalogue) -> None:
    """A browser's User-Agent (category ``unknown``) over a library's or tool's fingerprint is automation:
    the request is judged as ``scraping_tool``, as the library's own User-Agent would be (an
    unnamed ``http_client`` is a visitor under graded trust; a library is named)."""
    if ja4 is None or facts.identity.category != "unknown":
        return
    known = catalogue.lookup(ja4)
    if known is None or known.kind not in AUTOMATION:
        return
    identity = facts.identity
    evidence = f"ja4 {ja4}: {known.name}"
    facts.identity = Identity("scraping_tool", None, None, identity.ua_missing, identity.ua_hash, None, evidence)
