"""The bench spider for Scrapy, as a Scrapy user would write it: settings equivalent to
the crawler's run (64 concurrent requests, 64 per host, robots.txt off, the asyncio
reactor, items to a JSON lines feed) and Scrapy's defaults otherwise, logging at INFO.

Runs in Scrapy's own virtualenv (not the project's):

    scrapy runspider bench/scrapy_spider.py -a start_url=http://127.0.0.1:8181/ \
        -o items.jsonl:jsonlines
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response


class BenchSpider(scrapy.Spider):
    """Stores every page's URL and title; follows every link."""

    name = "bench"
    custom_settings = {
        "CONCURRENT_REQUESTS": 64,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 64,
        "ROBOTSTXT_OBEY": False,
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
        "LOG_LEVEL": "INFO",
        "TELNETCONSOLE_ENABLED": False,  # the two debugging consoles: no listening ports
        "REMOTE_CONTROL_ENABLED": False,
    }

    def __init__(self, start_url: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_url = start_url

    async def start(self) -> AsyncIterator[scrapy.Request]:
        """The start page, filtered like any other: the site's "Home" links are not
        fetched again (Scrapy's start requests skip the dupefilter by default)."""
        yield scrapy.Request(self.start_url, dont_filter=False)

    def parse(self, response: Response) -> Iterator[Any]:
        """One item per page; every link followed (Scrapy joins and dedups)."""
        yield {"url": response.url, "title": response.css("title::text").get()}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
