"""The spider the Redis crawl's tests run by path: tests/redis_site.py's pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from crawler import Request, Response, Spider


class RedisSiteSpider(Spider):
    """One item per page (its URL and its number); follows every link."""

    name = "redissite"
    start_urls = ["http://127.0.0.1:9/p/0"]  # tests point it at the site with START_URL

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        number = response.css_first("p.n")
        yield {"url": response.url, "n": int(number.text()) if number else None}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)
