"""Every exception the framework raises on purpose.

CrawlError
├── FetchError        a page could not be fetched (.request, .reason, .attempts)
│   └── BodyTooLarge  the body passed MAX_BODY and was cut off
├── SpiderError       a callback raised; the original is __cause__
├── SitemapError      a sitemap that is not XML, or not a sitemap (its page fails)
├── DropItem          raised by an item pipeline: the item is not stored (the reason is counted)
├── IgnoreRequest     raised by a middleware: the page is not fetched, or not kept
├── FormNotFound      FormRequest.from_response: the page has no such form (a ValueError too)
└── UsageError        bad input from the user: one line on stderr, exit 2
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crawler.http import Request, Response


class CrawlError(Exception):
    """Base of every error the framework raises on purpose."""


class FetchError(CrawlError):
    """A page could not be fetched; `reason` is the kind shown in `crawler status`."""

    def __init__(
        self,
        request: Request,
        reason: str,
        *,
        attempts: int = 1,
        response: Response | None = None,
    ) -> None:
        super().__init__(f"{reason}: {request.url}")
        self.request = request
        self.reason = reason
        self.attempts = attempts
        self.response = response  # set when the server answered with an error status

    @property
    def status(self) -> int | None:
        """The HTTP status of the last try, if the server answered."""
        return self.response.status if self.response is not None else None


class BodyTooLarge(FetchError):
    """The body passed MAX_BODY bytes; what was read is dropped."""


class SpiderError(CrawlError):
    """A spider callback raised; the original exception is `__cause__`."""


class SitemapError(CrawlError):
    """A sitemap page is not XML, is cut off, or is not a sitemap: its page fails with
    `SitemapError in _parse_sitemap`; the requests read before the fault are kept."""


class DropItem(CrawlError):
    """Raised by an item pipeline's `process_item`: the item is dropped, and `crawler status`
    counts it under the message (`DropItem("missing price")` -> `missing price: 1`)."""


class IgnoreRequest(CrawlError):
    """Raised by a middleware's `process_request` or `process_response`: the page is
    skipped, with the message as its reason."""


class FormNotFound(CrawlError, ValueError):
    """`FormRequest.from_response` found no form to fill in (none on the page, or none that
    `formcss` selects); in a callback, the page fails as `FormNotFound in parse`."""


class UsageError(CrawlError):
    """Bad input from the user: the CLI prints it as one line and exits 2."""
