"""A Scrapy spider that follows every link it finds, sitemaps included (run by tests/test_canaries.py)."""

import json
import re
from typing import ClassVar

import scrapy


class LinkSpider(scrapy.Spider):
    name = "links"
    custom_settings: ClassVar[dict] = {
        "HTTPERROR_ALLOW_ALL": True,
        "TELNETCONSOLE_ENABLED": False,
        "RETRY_ENABLED": False,
        "DEPTH_LIMIT": 1,
        "CONCURRENT_REQUESTS": 1,
        "DEFAULT_REQUEST_HEADERS": {"accept": "text/html,application/xhtml+xml", "sec-fetch-mode": "navigate"},
    }

    async def start(self):
        base = self.settings.get("BASE")
        # A home page, a player's audio without a session (the challenge page) and the sitemap
        # robots.txt names as disallowed: where a link-following scraper starts.
        for path in ("/", "/tracks/7/stream", "/sitemap-archive.xml"):
            yield scrapy.Request(base + path, dont_filter=True)

    def parse(self, response):
        path = "/" + response.url.split("://", 1)[1].split("/", 1)[1]
        yield {"path": path, "status": response.status}
        text = response.text if hasattr(response, "text") else ""
        links = re.findall(r'href="([^"]+)"', text) + re.findall(r"<loc>([^<]+)</loc>", text)
        for link in links:
            if link.startswith("/") or link.startswith(self.settings.get("BASE")):
                yield response.follow(link, callback=self.parse)

    def closed(self, reason):
        stats = {k: v for k, v in self.crawler.stats.get_stats().items() if isinstance(v, int | float | str)}
        with open(self.settings.get("STATS_FILE"), "w") as f:
            json.dump(stats, f)
