"""The Spider base class users subclass (re-exported by `crawler` and `crawler.spiders`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from crawler.http import Request, Response

if TYPE_CHECKING:
    from crawler.hooks import Crawl
    from crawler.settings import Settings
    from crawler.storage.sqlite import Summary


class Spider:
    """A site's crawl: where it starts, what it may visit, and how its pages are parsed.

    Callbacks are methods of the spider (so a resumed crawl can find them by name). They may
    be plain functions, coroutines, generators or async generators, and yield (or return)
    dicts or dataclass instances, which are stored as items, and Requests, which are crawled.
    `item_type` (a TypedDict or a dataclass) has every dict item checked against it.
    """

    name: ClassVar[str] = ""
    start_urls: list[str] = []
    allowed_domains: list[str] = []
    custom_settings: ClassVar[Mapping[str, Any]] = {}
    item_type: ClassVar[type | None] = None

    def prepare(self, settings: Settings) -> None:
        """Called by the engine as each run of a crawl starts (a resumed one too), before
        anything is fetched: raise UsageError if the spider's declarations are wrong (one
        line, exit status 2), and keep the settings the spider reads. Call super()."""

    def opened(self, crawl: Crawl) -> Any:
        """Called (sync or async) before each run of the crawl fetches anything, a resumed
        run included; `crawl.subscribe(event, handler)` subscribes to its events."""

    def closed(self, crawl: Crawl, summary: Summary) -> Any:
        """Called (sync or async) once, when the crawl has ended: nothing left to fetch, or
        MAX_PAGES reached. Not after Ctrl-C or a kill: the crawl resumes then."""

    def start_requests(self) -> Iterable[Request]:
        """The first requests of a crawl: by default a GET of each start URL, parsed by `parse`."""
        for url in self.start_urls:
            yield Request(url, callback=self.parse)

    def parse(self, response: Response) -> Any:
        """The default callback; spiders override it."""
        raise NotImplementedError(f"{type(self).__name__}.parse is not defined")
