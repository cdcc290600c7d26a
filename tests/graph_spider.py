"""A spider for the test site's page graph; the CLI tests run it as a file, too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from crawler import Request, Response, Spider


class GraphSpider(Spider):
    """Stores every page's URL and title; follows every link."""

    name = "graph"
    start_urls = ["http://127.0.0.1:9/g/0"]  # tests point it elsewhere with START_URL

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)
