"""What the engine needs of a frontier (`Frontier`), and the single-process one.

The engine runs the same stages whatever frontier it is given: it asks the frontier for
requests (`get`), tells it when a fetch is over (`release`) and what the hosts answered
(`hold`, `learned`, `answered`), and hands it each batch of parsed pages (`commit`),
which admits their links, records the pages and marks them done. The frontier is built
outside the engine (crawler/assemble.py) and passed in:

- `SQLiteFrontier`, here: the crawl's requests in its SQLite file, a window of them in
  memory (crawler/frontier.py); `commit` is the store's transaction. The default.
- `RedisWork` (crawler/redisworker.py): requests leased from a crawl kept in Redis and
  shared by many processes; `commit` finishes each page's lease, and the crawl's
  collector stores the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from crawler.cookies import Jars
from crawler.frontier import LocalFrontier
from crawler.http import PageResult, Request
from crawler.stats import Stats
from crawler.storage.sqlite import Store, StoredRequest

log = logging.getLogger(__name__)
Restore = Callable[[StoredRequest], Request]  # a stored request -> one with its callbacks


class Frontier(Protocol):
    """The engine's side of a frontier."""

    async def open(self, start: Sequence[Request]) -> Stats:
        """Start the crawl with `start`, or take up the one stored; its totals so far."""
        ...

    async def feed(self) -> None:
        """Keep the hand-out supplied (from the database, or from Redis) until the
        frontier closes; runs beside the fetch workers."""
        ...

    async def get(self) -> Request | None:
        """The next request to fetch; None once the crawl is over or stopped."""
        ...

    def release(self, request: Request, *, network: bool = True) -> None:
        """The fetch of `request` is over (`network`: it went to the host)."""
        ...

    async def commit(self, pages: list[PageResult]) -> None:
        """Admit the pages' links, record the pages for good, and mark them done."""
        ...

    def hold(self, url: str, seconds: float) -> None:
        """Hand out nothing for the URL's host for `seconds` (Retry-After)."""
        ...

    def learned(self, url: str, crawl_delay: float) -> None:
        """The URL's host has had its robots.txt read, which asks for `crawl_delay`."""
        ...

    def answered(self, url: str, latency: float, status: int) -> None:
        """A try to the URL's host got `status` after `latency` seconds (AUTOTHROTTLE)."""
        ...

    def stop(self) -> None:
        """Hand out nothing more."""
        ...

    def busiest(self, count: int) -> list[tuple[str, int, int, str, float]]:
        """The busiest hosts: (host, waiting, in flight, state, delay)."""
        ...

    @property
    def pending(self) -> int:
        """Requests waiting to be handed out."""
        ...

    @property
    def outstanding(self) -> int:
        """Requests handed out whose pages are not recorded yet."""
        ...


class SQLiteFrontier:
    """The single-process frontier: every request in the crawl's SQLite file (`Store`),
    a window of them in memory (`LocalFrontier`)."""

    def __init__(
        self,
        local: LocalFrontier,
        store: Store,
        restore: Restore,
        jars: Jars | None,
        refresh: float | None = None,
    ) -> None:
        self.local = local
        self.store = store
        self._restored = restore
        self.jars = jars  # the sessions' cookies: each page's saved with its commit
        self.refresh = refresh  # seconds: re-crawl the pages done longer ago (--refresh)
        # The memory side answers these itself (called once or more per page).
        self.get = local.get
        self.release = local.release
        self.hold = local.hold
        self.learned = local.learned
        self.answered = local.answered
        self.stop = local.stop
        self.busiest = local.busiest

    @property
    def pending(self) -> int:
        """Requests waiting, in memory and in the database."""
        return self.local.pending

    @property
    def outstanding(self) -> int:
        """Requests handed out whose pages are not committed yet."""
        return self.local.outstanding

    async def open(self, start: Sequence[Request]) -> Stats:
        """Seed a new crawl with `start`; or, if the file holds one, take it up."""
        store, local = self.store, self.local
        if self.refresh is not None:
            from crawler.storage.refresh import requeue

            count = await requeue(store.db, time.time() - self.refresh)
            log.info("refresh: %d pages done more than %g s ago queued again", count, self.refresh)
        stored = await store.load()
        started, queued = stored.pages_started, stored.queued
        stats = await store.stats()
        local.restore(stored.next_key, started, queued)
        if self.jars is not None and (started or queued):
            self.jars.load(await store.cookies())  # still logged in
        if started or queued:
            log.info("resuming %s: %d pages done, %d queued", store.path, started, queued)
            return stats
        admission = local.admit(start, None)
        new = await store.add_requests(admission.accepted, admission.dropped)
        self._push(admission.accepted, new)
        return stats

    async def feed(self) -> None:
        """Load queued requests from the database as the window empties."""
        local, store = self.local, self.store
        while await local.wait_refill():
            span = local.refill_range()
            if span is not None:
                rows, upto = await store.queued(span.after, span.upto, span.limit)
                local.load([self._restored(row) for row in rows], upto)

    async def commit(self, pages: list[PageResult]) -> None:
        """One transaction: the pages, their items and their new requests; then the new
        requests join the window and the pages are done."""
        local = self.local
        for page in pages:
            admission = local.admit(page.requests, page.request)
            page.requests = admission.accepted
            page.dropped = admission.dropped
        jars = self.jars
        if jars is not None and jars.changed:  # the cookies pages set commit with them
            for page in pages:
                page.cookies = jars.take(page.request.key)
        new = await self.store.commit_pages(pages)
        self._push([r for page in pages for r in page.requests], new)
        for page in pages:
            local.done(page.request)

    def _push(self, candidates: list[Request], new: set[int]) -> None:
        """Hand the window the requests the store has just committed as new."""
        if candidates:
            self.local.push([r for r in candidates if r.key in new], candidates[-1].key)
