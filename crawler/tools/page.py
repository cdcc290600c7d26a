"""One page at a time through the crawl's own stages: the Fetcher (with robots.txt) and
the Parser. The tools for writing a spider (fetch, parse, shell, check) use this, so a
page looks to them exactly as it looks to a crawl.
"""

from __future__ import annotations

from types import TracebackType

from crawler.errors import FetchError
from crawler.fetcher import Fetcher
from crawler.http import PageResult, Request, Response, redirect_request
from crawler.parse import Parser
from crawler.robots import Robots
from crawler.settings import Settings
from crawler.spider import Spider


class RobotsDenied(FetchError):
    """robots.txt forbids the URL to our user agent."""


class OnePage:
    """Fetch and parse single pages with a crawl's settings and spider."""

    def __init__(self, settings: Settings, spider: Spider | None = None) -> None:
        self.settings = settings
        self.spider = spider or Spider()
        self.parser = Parser(self.spider)
        self._fetcher = Fetcher(settings, on_wait=lambda url, seconds: None)
        self._robots: Robots | None = None

    async def __aenter__(self) -> OnePage:
        await self._fetcher.__aenter__()
        if self.settings.robots:
            self._robots = Robots(self._fetcher.fetch, self.settings.user_agent)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._robots is not None:
            self._robots.close()
        await self._fetcher.__aexit__(exc_type, exc, tb)

    async def fetch(self, request: Request | str) -> Response:
        """The response to a request (or URL), after its redirects (each hop checked
        against robots.txt, MAX_REDIRECTS at most); FetchError if it fails or robots.txt
        forbids it. An error status (404, 500...) comes back as a Response, for looking at."""
        hop: Request | None = Request(request) if isinstance(request, str) else request
        while hop is not None:
            if self._robots is not None and not await self._robots.allowed(hop.url):
                raise RobotsDenied(hop, "forbidden by robots.txt")
            try:
                response, _ = await self._fetcher.fetch(hop)
            except FetchError as exc:
                if exc.response is None:
                    raise
                return exc.response
            hop = redirect_request(response)  # FetchError past MAX_REDIRECTS
        return response

    async def parse(self, response: Response, callback: str | None = None) -> PageResult:
        """What the spider's callback (by name; default: the request's, or `parse`) makes
        of a response."""
        request = response.request
        if callback is not None:
            request = request.replace(callback=self.parser.callback(callback))
        outcome: Response | FetchError = response
        if response.status >= 400:
            outcome = FetchError(request, str(response.status), response=response)
        return await self.parser.parse(request, outcome, 1)
