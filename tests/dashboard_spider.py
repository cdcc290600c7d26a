"""The test site's page graph, with two failing links from 127.0.0.1's /g/0 and a callback
that raises on its /g/7: a crawl with something in every view of the dashboard. Runs in
process and as a file (so it imports nothing from the tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from crawler import Request, Response, Spider


class DashboardSpider(Spider):
    """Every graph page's URL and title; a 500 and a 404 found on /g/0; a ValueError on /g/7."""

    name = "dash"
    start_urls = ["http://127.0.0.1:9/g/0"]  # tests point it elsewhere with START_URL

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)
        if "//127.0.0.1:" not in response.url:  # the first host only
            return
        if response.url.endswith("/g/0"):
            yield response.follow("/status/500", callback=self.parse)
            yield response.follow("/status/404", callback=self.parse)
        if response.url.endswith("/g/7"):
            raise ValueError("page seven is broken")
