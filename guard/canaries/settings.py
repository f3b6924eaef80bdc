"""The compiled ``canaries:`` section of the rules (see guard/policy/model.py for the keys)."""

from __future__ import annotations

from dataclasses import dataclass

#: The id of the rule guard puts last in the rules when canaries are on: its check looks up
#: the bans a canary fetch starts (it counts nothing). Last: a request the rules allow or
#: refuse outright (a verified search engine's page, a blocked AI crawler) never looks.
RULE_ID = "canary"
#: ...and with fingerprints read, a second one for the client's rare TLS fingerprint.
FINGERPRINT_RULE_ID = "canary-fingerprint"


@dataclass(frozen=True, slots=True)
class CanarySettings:
    """Where canary ids come from, where they are linked, and what a fetch of one costs its client."""

    low: int = 9_000_000_000
    high: int = 9_999_999_999
    count: int = 64
    registered: tuple[str, ...] = ()
    key_env: str = "GUARD_CANARY_KEY"
    fallback_env: str = "GUARD_SESSION_KEY"
    links: tuple[str, ...] = ("/api/tracks/{id}",)
    stream: str = "/tracks/{id}/stream"
    sitemap: str | None = "/sitemap-archive.xml"
    audio: frozenset[str] = frozenset({"audio"})
    api: frozenset[str] = frozenset({"content_api"})
    ban_for: float = 86400.0
    address_for: float = 3600.0
    network_for: float = 600.0
