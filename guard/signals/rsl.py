"""Signals generated from artists' consents: RSL 1.0 license.xml, robots.txt lines, headers.

* ``/license.xml`` (RSL 1.0, namespace https://rslstandard.org/rsl): one ``<content>`` per
  opted-in artist's path, with a ``<license>`` per consent (``permits``/``prohibits``
  usage, pay per crawl ``payment``), and a site-wide ``<content url="/">`` that prohibits
  AI use: what nobody opted in to stays reserved.
* robots.txt: RSL's ``License:`` line, Cloudflare's ``Content-Signal`` line and AIPREF
  ``Content-Usage: <path> train-ai=y`` lines for paths that name opted-in artists. The
  allow/disallow rules do not change: robots.txt stays conservative for crawlers that do
  not license.
* Per response: ``Content-Usage``, ``X-Robots-Tag`` and TDMRep headers that reflect the
  artist's choice, and ``Link: <license.xml>; rel="license"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import escape, quoteattr

from guard.consent.model import ArtistConsent, Consent, Price
from guard.policy.rules import Policy

RSL_NAMESPACE = "https://rslstandard.org/rsl"
LICENSE_PATH = "/license.xml"
RSL_TYPE = b"application/rsl+xml"
AI_USAGES = ("ai-train", "ai-input")
_NOAI = {"noai", "noimageai"}


def artist_urls(artist: str, patterns: Iterable[str]) -> list[str]:
    """The paths that name ``artist`` (``/artists/{artist}`` -> ``/artists/a7``)."""
    return [p.replace("{artist}", artist) for p in patterns]


def license_xml(
    listing: Mapping[str, ArtistConsent], patterns: Iterable[str], price: Price | None, now: float, server: str | None
) -> str:
    """The RSL 1.0 document for the artists in ``listing``."""
    patterns = tuple(patterns)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<rsl xmlns="{RSL_NAMESPACE}">']
    server_attr = f" server={quoteattr(server)}" if server else ""
    for artist, record in sorted(listing.items()):
        consents = [c for c in record.consents if c.end is None or c.end > now]
        if not consents:
            continue
        for url in artist_urls(artist, patterns):
            lines.append(f"  <content url={quoteattr(url)}{server_attr}>")
            for consent in consents:
                lines += _licence(consent, price)
            lines.append("  </content>")
    lines += [
        '  <content url="/">',
        "    <license>",
        '      <prohibits type="usage">ai-all</prohibits>',
        "    </license>",
        "  </content>",
        "</rsl>",
    ]
    return "\n".join(lines) + "\n"


def _licence(consent: Consent, price: Price | None) -> list[str]:
    others = [u for u in AI_USAGES if u != consent.usage]
    lines = ["    <license>", f'      <permits type="usage">{escape(consent.usage)}</permits>']
    if others:
        lines.append(f'      <prohibits type="usage">{",".join(others)}</prohibits>')
    charge = None if consent.licence_only else consent.price or price
    if charge is not None:
        lines += [
            '      <payment type="crawl">',
            f'        <amount currency="{charge.currency}">{charge.amount:f}</amount>',
            "      </payment>",
        ]
    return [*lines, "    </license>"]


def opted_in(listing: Mapping[str, ArtistConsent], usage: str, now: float) -> list[str]:
    """Artists of ``listing`` with a current consent for ``usage``, sorted."""
    return sorted(a for a, r in listing.items() if usage in r.usages(now))


def robots_additions(
    text: str, license_url: str, listing: Mapping[str, ArtistConsent], patterns: Iterable[str], now: float
) -> str:
    """``text`` (the generated robots.txt) with the License, Content-Signal and path lines."""
    lines = text.split("\n")
    head = next((i for i, line in enumerate(lines) if not line.startswith("#")), 0)
    lines.insert(head, f"License: {license_url}")
    try:
        star = lines.index("User-agent: *")
    except ValueError:
        return "\n".join(lines)
    extra = ["Content-Signal: search=yes, ai-train=no, ai-input=no"]
    extra += [
        f"Content-Usage: {url}$ train-ai=y"
        for artist in opted_in(listing, "ai-train", now)
        for url in artist_urls(artist, patterns)
    ]
    lines[star + 1 : star + 1] = extra
    return "\n".join(lines)


def link_header(license_url: str) -> tuple[bytes, bytes]:
    return (b"link", f'<{license_url}>; rel="license"; type="application/rsl+xml"'.encode("latin-1"))


def artist_headers(
    policy: Policy, record: ArtistConsent | None, now: float, license_url: str
) -> list[tuple[bytes, bytes]]:
    """The signals a response about this artist's content carries (None: nobody opted in)."""
    train = record is not None and "ai-train" in record.usages(now)
    headers = []
    robots_tag = policy.x_robots_tag
    if train and robots_tag:  # drop the "no AI" tokens, keep the rest
        robots_tag = ", ".join(t for t in re.split(r"\s*,\s*", robots_tag.strip()) if t.lower() not in _NOAI)
    if robots_tag:
        headers.append((b"x-robots-tag", robots_tag.encode("latin-1")))
    if train:
        headers.append((b"content-usage", b"train-ai=y"))
    elif policy.content_usage:
        headers.append((b"content-usage", policy.content_usage.encode("latin-1")))
    if policy.tdmrep:
        # Rights stay reserved (the use is licensed, not free); the policy says how to license.
        headers.append((b"tdm-reservation", b"1"))
        if train:
            headers.append((b"tdm-policy", license_url.encode("latin-1")))
        elif policy.tdm_policy:
            headers.append((b"tdm-policy", policy.tdm_policy.encode("latin-1")))
    headers.append(link_header(license_url))
    return headers
