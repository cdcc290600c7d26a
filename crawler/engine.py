"""Wires the stages in one TaskGroup: frontier -> fetch workers -> parse -> writer.

The writer is the one edge back: it hands each batch of parsed pages to the frontier's
`commit`, which admits their links, records the pages and marks them done. The frontier
(crawler/frontiers.py: SQLite, or a worker's share of a crawl in Redis) and the store
are built outside (crawler/assemble.py) and passed in. Start, stop, resume.

The extension points sit where the data already flows (crawler/hooks.py): middleware
around the fetch, in the fetch step; item pipelines in the parse stage, before the
commit; events from the writer, after the commit; `opened`/`open` before the first
fetch of each run, `close` after it, and the spider's `closed` once, when the crawl ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

from crawler.cookies import Jars
from crawler.errors import FetchError, SpiderError, UsageError
from crawler.fetcher import Fetcher
from crawler.fetchstep import Fetched, FetchStep
from crawler.frontiers import Frontier
from crawler.hooks import Crawl, Middlewares, bound, call_each, fire
from crawler.http import PageResult, Request, Response
from crawler.parse import Parser
from crawler.robots import Robots, SharedRobots
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.stats import HostState, Snapshot, Stats
from crawler.storage.sqlite import Store, Summary, open_readonly, read_summary
from crawler.tools.cache import Cache
from crawler.urls import check_url

log = logging.getLogger(__name__)

BATCH_PAGES = 256  # pages at most in one commit
BATCH_LINKS = 20_000  # links found by pages waiting to be committed, at most (about)
FETCHED_PAGES = 4  # x CONCURRENCY: fetched pages waiting for the parse stage, at most
FETCHED_BYTES = 32 << 20  # and their bodies, in bytes, at most (about)
STOP_GRACE = 3.0  # seconds in-flight fetches get to finish after the first Ctrl-C
GC_YOUNG = 50_000  # net container allocations between two young collections, during a crawl
LIVE_EVERY = 2.0  # seconds between two writes of the live per-host state (crawler serve)
LIVE_HOSTS = 1000  # hosts at most in that state, the busiest


class _Budget:
    """What one stage holds for the next (links, bytes): `take` waits while the total is
    at or over `limit`, so one taker at most takes it past; `give` hands some back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def take(self, amount: int) -> None:
        while self.used >= self.limit:  # the event is clear exactly while this holds
            await self._room.wait()
        self.used += amount
        if self.used >= self.limit:
            self._room.clear()

    def give(self, amount: int) -> None:
        self.used -= amount
        if self.used < self.limit:
            self._room.set()


async def crawl(
    spider: type[Spider] | Spider,
    db: str | Path,
    settings: Mapping[str, Any] | None = None,
    *,
    refresh: float | None = None,
) -> Summary:
    """Run (or resume) a crawl of `spider` into the SQLite file `db`; with `refresh`
    (seconds), first queue again its pages done longer ago than that."""
    from crawler.assemble import sqlite_engine

    spider = spider if isinstance(spider, Spider) else spider()
    return await sqlite_engine(spider, Path(db), settings, refresh=refresh).run()


def _note_fetch(result: PageResult, fetched: Fetched) -> None:
    """What the dashboard shows of a fetch: its duration, headers and error message."""
    outcome = fetched.outcome
    result.elapsed = fetched.elapsed
    response = outcome.response if isinstance(outcome, FetchError) else outcome
    if isinstance(response, Response):
        result.headers = response.headers
    if isinstance(outcome, FetchError):
        cause = outcome.__cause__
        result.error_text = f"{type(cause).__name__}: {cause}" if cause else str(outcome)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run CPython's cycle collector less often while a crawl runs.

    A crawl allocates a few container objects per link (the <a> node, its attributes,
    the Request) and reference counting frees nearly all of them at once. At the default
    young-generation threshold (700) the collector still ran 2,700 times in a 20,000-page
    bench crawl, promoting the live window to older generations and sweeping it 22 times
    in full: 1.5 of 10 CPU-seconds, measured with `gc.callbacks`. At GC_YOUNG it ran 75
    times (0.07 s). Cyclic garbage still gets collected, at most GC_YOUNG objects late."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_YOUNG), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Engine:
    """One process's share of a crawl: a spider, its settings, and the parts the
    assembler built for them (crawler/assemble.py): the frontier, the parse stage, the
    middleware, and the store when this process has one (a Redis worker has none)."""

    def __init__(
        self,
        spider: Spider,
        settings: Settings,
        frontier: Frontier,
        parser: Parser,
        middlewares: Middlewares,
        *,
        store: Store | None = None,
        jars: Jars | None = None,
        shared_robots: SharedRobots | None = None,
        db: Path | None = None,
    ) -> None:
        self.spider = spider
        self.settings = settings
        self.frontier = frontier
        self.store = store
        self.parser = parser
        self.pipelines = parser.pipelines
        self.middlewares = middlewares
        self.shared_robots = shared_robots  # robots.txt kept for every process of the crawl
        self.stats = Stats()
        self.crawl = Crawl(spider, settings, db, self.stats, self.stop)
        # A deeper buffer than one page per worker keeps the parse stage from running dry:
        # at 4 x CONCURRENCY pages the bench crawl takes 0.91x the CPU of 1 x (RESULTS.md).
        self._fetched: asyncio.Queue[Fetched | None] = asyncio.Queue(
            FETCHED_PAGES * self.settings.concurrency
        )
        self._bodies = _Budget(FETCHED_BYTES)  # bytes of the bodies in _fetched
        self._parsed: asyncio.Queue[PageResult | None] = asyncio.Queue(BATCH_PAGES)
        self._links = _Budget(BATCH_LINKS)  # requests yielded by the pages in _parsed
        self._fetch_tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._fetcher: Fetcher | None = None
        self._started = time.monotonic()
        self._step: FetchStep | None = None
        self.jars = jars  # the sessions' cookies

    async def run(self) -> Summary:
        """Crawl until the frontier is empty, MAX_PAGES is reached, or `stop()`."""
        started = self._started = time.monotonic()
        start = start_requests(self.spider, self.settings, self.parser)
        async with AsyncExitStack() as stack:
            stack.enter_context(_fewer_collections())
            cache = None
            if self.settings.cache:
                cache = Cache(Path(self.settings.cache), self.settings.cache_expire)
                await stack.enter_async_context(cache)
            if self.store is not None:
                await stack.enter_async_context(self.store)
            answered = self.frontier.answered if self.settings.autothrottle else None
            fetcher = await stack.enter_async_context(
                Fetcher(self.settings, self.frontier.hold, cache, self.jars, answered)
            )
            self._fetcher = fetcher
            robots = (
                Robots(fetcher.fetch, self.settings.user_agent, self.shared_robots)
                if self.settings.robots
                else None
            )
            step = self._step = FetchStep(
                fetcher, robots, self.middlewares, self.frontier.learned, self.settings.retries
            )
            self.stats.add(await self.frontier.open(start))
            hooks = [*self.pipelines.objects, *self.middlewares.objects]
            await call_each([self.spider.opened, *bound(hooks, "open")], self.crawl)
            fetched_all = asyncio.Event()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._write_loop(), name="writer")
                    tg.create_task(self._parse_loop(), name="parse")
                    tg.create_task(self.frontier.feed(), name="feed")
                    self._fetch_tasks = [
                        tg.create_task(self._fetch_loop(step), name=f"fetch-{i}")
                        for i in range(self.settings.concurrency)
                    ]
                    tg.create_task(self._live_loop(fetched_all), name="live")
                    await asyncio.wait(self._fetch_tasks)
                    fetched_all.set()
                    await self._fetched.put(None)
                await self._record_live("ended")
            finally:
                if robots is not None:
                    robots.close()
                await fire(bound(hooks, "close"), self.crawl)
            if self.store is None:  # a worker's share: what it did
                summary = Summary.of(self.spider.name or "", self.stats)
            else:
                with closing(open_readonly(self.store.path)) as db:
                    summary = read_summary(db)
            summary.elapsed = time.monotonic() - started
            summary.pages_this_run = self.stats.pages_this_run
            if not self._stopping and self.store is not None:
                await closed(self.spider, self.store, self.crawl, summary)
        return summary

    def stop(self) -> None:
        """Fetch nothing new; pages in flight get STOP_GRACE seconds, then are left for resume."""
        if self._stopping:
            return
        self._stopping = True
        self.frontier.stop()
        log.warning(
            "stopping: finishing the pages in flight (up to %.0f s); Ctrl-C again to exit now",
            STOP_GRACE,
        )
        asyncio.get_running_loop().call_later(STOP_GRACE, self._cancel_fetches)

    def _cancel_fetches(self) -> None:
        for task in self._fetch_tasks:
            task.cancel()

    async def _fetch_loop(self, step: FetchStep) -> None:
        while (request := await self.frontier.get()) is not None:
            network = True
            try:
                fetched = await step.run(request)
                network = fetched.attempts > 0  # 0: from the cache, or not fetched at all
            finally:
                self.frontier.release(request, network=network)
            await self._bodies.take(fetched.size)
            await self._fetched.put(fetched)

    async def _parse_loop(self) -> None:
        while (fetched := await self._fetched.get()) is not None:
            self._bodies.give(fetched.size)
            if isinstance(fetched.outcome, str):
                result = PageResult(fetched.request, skipped=True, error=fetched.outcome)
                result.attempts = fetched.attempts
            else:
                result = await self.parser.parse(fetched.request, fetched.outcome, fetched.attempts)
            _note_fetch(result, fetched)
            # Pages with thousands of links each must not pile up in memory before the writer.
            await self._links.take(len(result.requests))
            await self._parsed.put(result)
        await self._parsed.put(None)

    async def _write_loop(self) -> None:
        finished = False
        while not finished:
            batch = [await self._parsed.get()]
            while len(batch) < BATCH_PAGES and not self._parsed.empty():
                batch.append(self._parsed.get_nowait())
            if batch[-1] is None:
                finished = True
                batch.pop()
            pages = [page for page in batch if page is not None]
            self._links.give(sum(len(page.requests) for page in pages))
            if not pages:
                continue
            await self.frontier.commit(pages)
            stats = self.stats
            stats.count(pages)
            store = self.store
            if store is not None and store.removed_items:  # a refresh replaced old items
                stats.items -= store.removed_items
                store.removed_items = 0
            handlers = self.crawl.handlers
            if handlers["page_stored"] or handlers["page_failed"] or handlers["item_dropped"]:
                await self._events(pages)

    async def _events(self, pages: list[PageResult]) -> None:
        """page_stored, page_failed and item_dropped for committed pages."""
        handlers, stats = self.crawl.handlers, self.stats
        for page in pages:
            if page.dropped_items:
                for item, reason in page.dropped_items:
                    await fire(handlers["item_dropped"], item, reason, stats)
            if page.skipped or page.redirected:
                continue
            await fire(handlers["page_failed" if page.error else "page_stored"], page, stats)

    async def _live_loop(self, fetched_all: asyncio.Event) -> None:
        """Every LIVE_EVERY seconds, the frontier's per-host state into the database, for
        `crawler serve` in another process; ends when the fetch workers have."""
        while not fetched_all.is_set():
            await self._record_live("running")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LIVE_EVERY):
                    await fetched_all.wait()

    async def _record_live(self, state: str) -> None:
        if self.store is None:
            return
        running = state == "running"
        busiest = self.frontier.busiest(LIVE_HOSTS) if running else []
        await self.store.record_live(
            [(host, waiting, in_flight, what) for host, waiting, in_flight, what, _ in busiest],
            {
                "run_state": state,
                "run_started": str(time.time() - (time.monotonic() - self._started)),
                "heartbeat": str(time.time()),
                "in_flight": str(self.frontier.outstanding if running else 0),
                "max_pages": str(self.settings.max_pages),
            },
        )

    def snapshot(self) -> Snapshot:
        """The crawl's counters now, for the progress display."""
        fetcher, step = self._fetcher, self._step
        return self.stats.snapshot(
            time.monotonic() - self._started,
            queued=self.frontier.pending,
            in_flight=self.frontier.outstanding,
            bytes=fetcher.bytes if fetcher is not None else 0,
            retries=(step.retried if step is not None else 0)
            + (fetcher.retries if fetcher is not None else 0),
            max_pages=self.settings.max_pages,
            hosts=tuple(HostState(*host) for host in self.frontier.busiest(8)),
        )


async def closed(spider: Spider, store: Store, crawl: Crawl, summary: Summary) -> None:
    """The crawl has ended (not stopped): the spider's `closed`, once per crawl."""
    if await store.noted("closed") is not None:
        return
    await fire([spider.closed], crawl, summary)  # one that raises is logged
    await store.note("closed", repr(time.time()))


def start_requests(spider: Spider, settings: Settings, parser: Parser) -> list[Request]:
    """The spider's start requests, checked before any file is touched."""
    spider.prepare(settings)  # its own declarations (rules, sitemap rules)
    start = list(spider.start_requests())
    if not start:
        raise UsageError(f"spider {spider.name!r} has no start URLs")
    for request in start:
        problem = check_url(request.url)
        if problem:
            raise UsageError(f"spider {spider.name!r}: start URL {request.url!r}: {problem}")
        try:
            parser.check_request(request)
        except SpiderError as exc:
            raise UsageError(f"spider {spider.name!r}: start request: {exc}") from None
    return start
