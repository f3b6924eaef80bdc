"""Bait: where canary links are put for scrapers to find, and no person or honest crawler looks."""

from __future__ import annotations

import html
from xml.sax.saxutils import escape

#: Invisible to people (hidden, out of the accessibility tree, not focusable), plain links to a parser.
HIDDEN_LINK = '<a href="{url}" hidden aria-hidden="true" tabindex="-1" rel="nofollow" style="display:none">{text}</a>'


def hidden_links(urls: list[str]) -> str:
    """HTML of links a browser never shows, for pages guard serves itself."""
    return "".join(HIDDEN_LINK.format(url=html.escape(u), text="archive") for u in urls)


def with_bait(page: bytes, urls: list[str]) -> bytes:
    """``page`` (HTML) with hidden canary links before its ``</body>``."""
    end = page.rfind(b"</body>")
    if end < 0 or not urls:
        return page
    return page[:end] + hidden_links(urls).encode() + page[end:]


def sitemap(base: str, urls: list[str]) -> bytes:
    """A sitemap (sitemaps.org) of canary URLs, served where robots.txt disallows it."""
    entries = "".join(f"<url><loc>{escape(base + u)}</loc></url>" for u in urls)
    xml = f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
    return xml.encode()
