"""The fetch step: one request's trip between the frontier's hand-out and the parse stage.

Request middleware first (after the frontier counted the host's slot and DELAY), then
robots.txt, then the fetch (retries, timeouts and the body cap are the Fetcher's), then
response or error middleware, which may keep, change or drop the page, recover a failure,
or put a request in its place (fetched on the same slot, at most RETRIES times a page).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from crawler.errors import FetchError
from crawler.fetcher import Fetcher, backoff
from crawler.hooks import HookError, Middlewares
from crawler.http import Request, Response
from crawler.robots import Robots
from crawler.urls import check_url, host_of

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Fetched:
    """A request's outcome from the fetch step, on its way to the parse stage."""

    request: Request
    outcome: Response | FetchError | str  # str: not fetched on purpose, and why
    attempts: int = 1
    elapsed: float | None = None  # seconds fetcher.fetch took

    @property
    def size(self) -> int:
        """The bytes of the body it holds."""
        outcome = self.outcome
        response = outcome.response if isinstance(outcome, FetchError) else outcome
        return len(response.body) if isinstance(response, Response) else 0


class FetchStep:
    """Middleware, robots.txt and the fetcher around one request at a time."""

    def __init__(
        self,
        fetcher: Fetcher,
        robots: Robots | None,
        middlewares: Middlewares,
        learned: Callable[[str, float], None],
        retries: int,
    ) -> None:
        self._fetcher = fetcher
        self._robots = robots
        self._middlewares = middlewares
        self._learned = learned  # the frontier's: a host's robots.txt read, its Crawl-delay
        self._retries = retries
        self.retried = 0  # fetches again that middleware asked for

    async def run(self, request: Request) -> Fetched:
        """The request's page: fetched (or recovered, or replaced) or why it is not."""
        middlewares = self._middlewares
        if middlewares.process_request:
            try:
                changed, label = await middlewares.request(request)
            except HookError as exc:
                return _broken(request, exc, 0)
            if isinstance(changed, str):
                return Fetched(request, changed, attempts=0)
            same = _in_place(request, changed, label)
            if isinstance(same, FetchError):
                return Fetched(request, same, attempts=0)
            request = same
        robots = self._robots
        if robots is not None:
            allowed = await robots.allowed(request.url)
            self._learned(request.url, await robots.crawl_delay(request.url))
            if not allowed:
                return Fetched(request, "forbidden by robots.txt", attempts=0)
        fetched = await self._download(request)
        if middlewares.process_response or middlewares.process_error:
            fetched = await self._after(fetched)
        return fetched

    async def _after(self, fetched: Fetched) -> Fetched:
        """The middleware's word on a fetched page: keep it (changed or not), drop it,
        recover a failure, or fetch a request in its place (at most RETRIES times a page)."""
        middlewares, tries, again_left = self._middlewares, fetched.attempts, self._retries
        while True:
            request = fetched.request
            outcome: Response | Request | FetchError | str = fetched.outcome
            try:
                label = ""
                if isinstance(outcome, FetchError) and middlewares.process_error:
                    recovered, label = await middlewares.error(request, outcome)
                    if recovered is None:
                        return fetched
                    outcome = recovered
                if isinstance(outcome, Response) and middlewares.process_response:
                    outcome, label = await middlewares.response(request, outcome)
            except HookError as exc:
                return _broken(request, exc, tries)
            if not isinstance(outcome, Request):
                return Fetched(request, outcome, tries)
            again = _in_place(request, outcome, label)
            if isinstance(again, FetchError):
                return Fetched(request, again, tries)
            if again_left == 0:
                reason = f"retries exhausted by {label}"
                return Fetched(request, FetchError(request, reason, attempts=tries), tries)
            again_left -= 1
            self.retried += 1
            await asyncio.sleep(backoff(tries))
            fetched = await self._download(again)
            tries += max(1, fetched.attempts)  # a cached answer counts too: the loop ends
            fetched.attempts = tries

    async def _download(self, request: Request) -> Fetched:
        began = time.monotonic()
        try:
            response, attempts = await self._fetcher.fetch(request)
        except FetchError as exc:
            return Fetched(request, exc, exc.attempts, time.monotonic() - began)
        return Fetched(request, response, attempts, time.monotonic() - began)


def _in_place(original: Request, again: Request, label: str) -> Request | FetchError:
    """The request a middleware returned, fetched as the same page: same row, fingerprint
    and depth, and the same host (its per-host slot is the one held)."""
    if check_url(again.url):
        return FetchError(original, f"{label} returned a request for an invalid URL")
    if host_of(again.url) != host_of(original.url):
        return FetchError(original, f"{label} returned a request for another host")
    if again.key == original.key and again.fp == original.fp and again.depth == original.depth:
        return again
    return again.replace(key=original.key, fp=original.fp, depth=original.depth)


def _broken(request: Request, exc: HookError, attempts: int) -> Fetched:
    """A middleware raised: the page fails with its kind (`ValueError in Sign.process_request`)."""
    log.warning("%s on %s", exc, request.url, exc_info=exc.__cause__)
    return Fetched(request, FetchError(request, exc.kind, attempts=attempts), attempts)
