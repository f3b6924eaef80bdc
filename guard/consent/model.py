"""What an artist agreed to: consents per usage, operator, track and period.

The vocabulary is the one Cloudflare's Content Signals and RSL share: ``search``,
``ai-input`` (assistants and retrieval fetching for a user) and ``ai-train``. An
artist's record is a list of consents; a request is permitted when one of them covers
its usage, its operator, its track and the current time. No record, no consent: AI use
is opt-in only.

A record is plain data (YAML file, JSON in Redis, a dict from the application)::

    a7:
      - usage: ai-train
        operators: [OpenAI]   # omitted: any licensed operator
        tracks: ["7", "507"]  # omitted: every track of the artist
        from: 2026-01-01      # omitted: now
        until: 2027-12-31     # omitted: until revoked
        price: USD 0.02       # pay per crawl price; omitted: the site's; "none": licences only
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

USAGES = ("search", "ai-input", "ai-train")
#: Artist ids: what fits a path segment, a Redis key and an XML attribute without escaping.
ARTIST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PRICE = re.compile(r"^\s*([A-Z]{3})\s+(\d{1,9}(?:\.\d{1,6})?)\s*$")


class ConsentError(ValueError):
    """A consent record (or a price) that does not parse; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Price:
    """A per-request price in Cloudflare's header form: ``USD 0.01``."""

    currency: str
    amount: Decimal

    @classmethod
    def parse(cls, text: str) -> Price:
        """``"USD 0.01"`` -> Price; raises :class:`ConsentError` on anything else."""
        m = _PRICE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ConsentError(f"price {text!r} is not 'CUR amount', e.g. 'USD 0.01'")
        try:
            return cls(m.group(1), Decimal(m.group(2)))
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise ConsentError(f"price {text!r} has no valid amount") from None

    def __str__(self) -> str:
        whole, _, cents = format(self.amount.normalize(), "f").partition(".")
        return f"{self.currency} {whole}.{cents.ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class Consent:
    """One opt-in: a usage, for whom, on what, when, at what price."""

    usage: str
    operators: frozenset[str] = frozenset()  # casefolded; empty: any licensed operator
    tracks: frozenset[str] = frozenset()  # empty: every track of the artist
    start: float | None = None  # epoch seconds
    end: float | None = None
    price: Price | None = None  # None: the site's default price
    licence_only: bool = False  # "price: none": no pay per crawl, licences only

    def covers(self, usage: str, operator: str | None, track: str | None, now: float) -> bool:
        """Whether this consent permits ``usage`` by ``operator`` on ``track`` at ``now``."""
        if usage != self.usage:
            return False
        if self.operators and (operator is None or operator.casefold() not in self.operators):
            return False
        if self.tracks and track not in self.tracks:
            return False
        if self.start is not None and now < self.start:
            return False
        return self.end is None or now < self.end

    def to_dict(self) -> dict[str, Any]:
        """The record form (what the file and Redis hold)."""
        out: dict[str, Any] = {"usage": self.usage}
        if self.operators:
            out["operators"] = sorted(self.operators)
        if self.tracks:
            out["tracks"] = sorted(self.tracks)
        if self.start is not None:
            out["from"] = _iso(self.start)
        if self.end is not None:
            out["until"] = _iso(self.end)
        if self.licence_only:
            out["price"] = "none"
        elif self.price is not None:
            out["price"] = str(self.price)
        return out


@dataclass(frozen=True, slots=True)
class ArtistConsent:
    """Everything one artist opted in to."""

    artist: str
    consents: tuple[Consent, ...] = ()

    def permits(self, usage: str, operator: str | None, track: str | None, now: float) -> Consent | None:
        """The consent that covers this use, or None."""
        for consent in self.consents:
            if consent.covers(usage, operator, track, now):
                return consent
        return None

    def usages(self, now: float) -> frozenset[str]:
        """Usages some consent covers now for some operator (what the signals announce)."""
        return frozenset(
            c.usage for c in self.consents if (c.start is None or c.start <= now) and (c.end is None or now < c.end)
        )

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.consents]


def parse_artist(artist: Any, raw: Any) -> ArtistConsent:
    """An artist's record from its plain form (a list of consent mappings)."""
    if not isinstance(artist, str) or not ARTIST_ID.match(artist):
        raise ConsentError(f"artist id {artist!r}: letters, digits, - _ . (at most 64)")
    if isinstance(raw, Mapping):  # one consent written without the list
        raw = [raw]
    if not isinstance(raw, list):
        raise ConsentError(f"artist {artist}: a list of consents (usage, operators, tracks, from, until, price)")
    return ArtistConsent(artist, tuple(parse_consent(artist, item) for item in raw))


def parse_consent(artist: str, raw: Any) -> Consent:
    if not isinstance(raw, Mapping):
        raise ConsentError(f"artist {artist}: each consent is a mapping with at least 'usage'")
    unknown = set(raw) - {"usage", "operators", "tracks", "from", "until", "price"}
    if unknown:
        raise ConsentError(f"artist {artist}: unknown consent field {sorted(unknown)[0]!r}")
    usage = raw.get("usage")
    if usage not in USAGES:
        raise ConsentError(f"artist {artist}: usage {usage!r} is not one of {', '.join(USAGES)}")
    price_text = raw.get("price")
    licence_only = price_text in ("none", False)
    price = None if price_text is None or licence_only else Price.parse(str(price_text))
    start, end = _time(artist, raw.get("from")), _time(artist, raw.get("until"))
    if start is not None and end is not None and end <= start:
        raise ConsentError(f"artist {artist}: 'until' is before 'from'")
    return Consent(
        usage,
        frozenset(o.casefold() for o in _strings(artist, "operators", raw.get("operators"))),
        frozenset(_strings(artist, "tracks", raw.get("tracks"))),
        start,
        end,
        price,
        licence_only,
    )


def parse_registry(raw: Any) -> dict[str, ArtistConsent]:
    """``{artist: [consent, ...]}`` into records (the file's ``artists:`` mapping)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConsentError("'artists' maps artist ids to their lists of consents")
    return {str(artist): parse_artist(str(artist), consents) for artist, consents in raw.items()}


def _strings(artist: str, key: str, value: Any) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise ConsentError(f"artist {artist}: '{key}' is a name or a list of names")
    return [str(v) for v in value]


def _time(artist: str, value: Any) -> float | None:
    """Epoch seconds from a date (midnight UTC), a datetime or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConsentError(f"artist {artist}: {value!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ConsentError(f"artist {artist}: {value!r} is not a date")


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")
