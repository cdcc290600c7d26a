"""The Spider base class users subclass (re-exported by `crawler` and `crawler.spiders`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from crawler.http import Request, Response


class Spider:
    """A site's crawl: where it starts, what it may visit, and how its pages are parsed.

    Callbacks are methods of the spider (so a resumed crawl can find them by name). They may
    be plain functions, coroutines, generators or async generators, and yield (or return)
    dicts, which are stored as items, and Requests, which are crawled.
    """

    name: ClassVar[str] = ""
    start_urls: list[str] = []
    allowed_domains: list[str] = []
    custom_settings: ClassVar[Mapping[str, Any]] = {}

    def start_requests(self) -> Iterable[Request]:
        """The first requests of a crawl: by default a GET of each start URL, parsed by `parse`."""
        for url in self.start_urls:
            yield Request(url, callback=self.parse)

    def parse(self, response: Response) -> Any:
        """The default callback; spiders override it."""
        raise NotImplementedError(f"{type(self).__name__}.parse is not defined")
