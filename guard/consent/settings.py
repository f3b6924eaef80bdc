"""The consent settings: where consents live, what AI categories mean, prices, licences."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from guard.consent.model import Price

DEFAULT_ARTIST_PATHS = ("/artists/{artist}", "/api/artists/{artist}")
DEFAULT_LEDGER = "~/.local/state/guard/consent-ledger.jsonl"
DEFAULT_PRICE = Price("USD", Decimal("0.01"))
#: What each catalogue category's requests are used for (the consent vocabulary).
DEFAULT_USAGES = {"ai_training": "ai-train", "ai_search": "ai-input", "ai_assistant": "ai-input"}


@dataclass(frozen=True)
class ConsentSettings:
    """How the guard honours artists' opt-ins (the rules file's ``consent:`` section).

    :param source: ``file`` (``file`` below), ``redis`` (the rules' or middleware's Redis)
        or ``app`` (the ``lookup`` the application gives the middleware).
    :param file: the consent file (YAML) for ``source: file``.
    :param artist_paths: path patterns that name an artist as ``{artist}``.
    :param usages: catalogue category -> usage; requests of other categories are not AI use.
    :param price: pay per crawl price per request (``USD 0.01``); None: licences only.
    :param issuer: the ``iss`` of licence tokens.
    :param licence_key: the Ed25519 JWK file that signs licence tokens (default
        ``$GUARD_LICENCE_KEY`` or ~/.config/guard/licence-key.json, created on first use).
    :param public_url: the site's public origin (``https://music.example``) for the
        absolute URLs of robots.txt's ``License:`` line and the licence pointers; without
        it they are built from the request's Host.
    :param authorization_uri: where crawlers obtain a licence (``WWW-Authenticate``);
        default: the license.xml.
    :param ledger: the JSON-lines accounting file of the embedded store (relative paths
        from the rules file's folder).
    :param ledger_max: bound of the Redis accounting stream.
    :param cache_ttl: seconds an application lookup is cached.
    :param refresh: seconds between background refreshes (file changes, Redis listing).
    """

    source: str = "file"
    file: str | None = None
    artist_paths: tuple[str, ...] = DEFAULT_ARTIST_PATHS
    usages: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USAGES))
    price: Price | None = DEFAULT_PRICE
    issuer: str = "guard"
    licence_key: str | None = None
    public_url: str | None = None
    authorization_uri: str | None = None
    ledger: str = DEFAULT_LEDGER
    ledger_max: int = 10_000_000
    cache_ttl: float = 30.0
    refresh: float = 2.0
