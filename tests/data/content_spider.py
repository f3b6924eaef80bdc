"""A Scrapy spider that goes straight for a music platform's content (run by tests/test_scrapy.py)."""

import json
from typing import ClassVar

import scrapy

CONTENT = ["/tracks/1/stream", "/api/tracks/1", "/tracks/2/stream", "/api/tracks/2", "/audio/one.mp3"]


class ContentSpider(scrapy.Spider):
    name = "content"
    custom_settings: ClassVar[dict] = {
        "HTTPERROR_ALLOW_ALL": True,
        "TELNETCONSOLE_ENABLED": False,
        "RETRY_ENABLED": False,
    }

    async def start(self):
        # One request first, the rest once it is answered: requests that wait together for
        # robots.txt are not all checked against it by this Scrapy version (a client bug).
        yield scrapy.Request(self.settings.get("BASE") + "/", callback=self.then, errback=self.then, dont_filter=True)

    def then(self, response_or_failure):
        if hasattr(response_or_failure, "status"):
            yield from self.parse(response_or_failure)
        for path in CONTENT:
            yield scrapy.Request(self.settings.get("BASE") + path, dont_filter=True)

    def parse(self, response):
        yield {"path": response.url.split("://", 1)[1].split("/", 1)[1], "status": response.status}

    def closed(self, reason):
        stats = {k: v for k, v in self.crawler.stats.get_stats().items() if isinstance(v, int | float | str)}
        with open(self.settings.get("STATS_FILE"), "w") as f:
            json.dump(stats, f)
