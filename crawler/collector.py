"""The collector of a crawl kept in Redis: stores every worker's results in the crawl's
SQLite file, and says when the crawl is over.

Results come from the crawl's results stream, read in order. Each batch is committed in
one transaction, keyed by the pages' fingerprints (a page already stored is skipped:
crawler/storage/collected.py), and only then trimmed from the stream. So a collector
killed at any moment loses nothing (it reads the stream from its start again) and stores
nothing twice. Workers slow down while the stream is full. A batch smaller than BATCH
waits GATHER before the next read: one transaction of ~200 pages instead of several of
~30 took a third less of the collector's CPU (issue 13).

The crawl is over when nothing is queued or leased and no result waits: the collector
marks it "ended" in Redis (the workers exit), and calls the spider's `closed`. On
`stop()` it marks it "stopped", collects what the workers still finish, and returns; a
later run resumes the crawl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from crawler import results, wire
from crawler.http import PageResult
from crawler.redisfrontier import RedisFrontier, Result
from crawler.stats import Snapshot, Stats
from crawler.storage.collected import commit_collected
from crawler.storage.sqlite import Store, Summary

log = logging.getLogger(__name__)

BATCH = 256  # results at most per transaction
GATHER = 0.1  # seconds a partial batch leaves the stream to fill before the next read
BLOCK_MS = 200  # how long one read waits for results
LOOK_EVERY = 0.5  # seconds between two looks at whether the crawl is over
LIVE_EVERY = 2.0  # seconds between two writes of the live state (status, dashboard)
STOP_WAIT = 15.0  # seconds at most to collect what workers finish after a stop, past a lease


class Collector:
    """Stores a Redis crawl's results in its SQLite file."""

    def __init__(self, redis: RedisFrontier, store: Store, max_pages: int) -> None:
        self.redis = redis
        self.store = store
        self.max_pages = max_pages
        self.stats = Stats()
        self.bytes = 0  # body bytes of the pages collected in this run
        self.skipped = 0  # results stored by an earlier run (delivered again)
        self._stopping = False
        self.over = False  # the crawl has ended (nothing queued, leased or waiting)
        self._marking: asyncio.Future[None] | None = None  # the "stopped" mark, being written
        self._queued = 0
        self._leased = 0
        self._refused = 0  # finishes under a lost lease, over the whole crawl
        self._expired = 0  # leases that ran out (a worker killed, or cut off) and went back
        self._started = time.monotonic()
        self._after = "0-0"  # the stream id of the last result read: the next read's start

    async def run(self) -> bool:
        """Collect until the crawl is over (True) or stopped (False)."""
        self.stats.add(await self.store.stats())
        looked = lived = 0.0
        stopped_at: float | None = None
        while True:
            got = await self._collect()
            now = time.monotonic()
            if now - lived >= LIVE_EVERY:
                lived = now
                await self._record_live("running" if not self._stopping else "stopping")
            if now - looked < LOOK_EVERY:
                continue
            looked = now
            await self.redis.reap()  # a killed worker's leases, even if no worker leases now
            counts = await self.redis.counts()
            self._queued, self._leased = counts.queued, counts.leased
            self._refused, self._expired = counts.refused, counts.expired
            if self._stopping:
                stopped_at = stopped_at or now
                if counts.leased == 0 and counts.results == 0:
                    break
                if now - stopped_at > self.redis.lease_seconds + STOP_WAIT:
                    log.warning("%d leases still held; they will be leased again", counts.leased)
                    break
            elif not got and counts.results == 0 and counts.complete:
                self.over = True
                await self.redis.set_state("ended")
                await self._collect()
                self._leased = 0
                await self._record_live("ended")
                return True
        await self._record_live("stopped")
        return False

    def stop(self) -> None:
        """Stop the crawl for every worker; collect what they still finish."""
        if not self._stopping:
            self._stopping = True
            self._marking = asyncio.ensure_future(self.redis.set_state("stopped"))

    async def _collect(self) -> int:
        """Read, store and trim one batch of results; how many there were."""
        found = await self.redis.results(self._after, BATCH, BLOCK_MS)
        if not found:
            return 0
        pages = [self._page(result) for result in found]
        self.skipped += await commit_collected(self.store, pages)
        self._after = found[-1].id
        await self.redis.ack(self._after)
        self.stats.count(pages)
        self.bytes += sum(page.size for page in pages)
        if len(found) < BATCH and not self._stopping:
            await asyncio.sleep(GATHER)
        return len(found)

    def _page(self, result: Result) -> PageResult:
        request = wire.decode(result.request, result.host, self.redis.resolve)
        return results.decode(result.result, request, result.new)

    async def _record_live(self, state: str) -> None:
        workers = await self.redis.workers() if state == "running" else []
        await self.store.record_live(
            [],
            {
                "run_state": state,
                "run_started": str(time.time() - (time.monotonic() - self._started)),
                "heartbeat": str(time.time()),
                "in_flight": str(self._leased if state == "running" else 0),
                "max_pages": str(self.max_pages),
                # what waits in Redis; after a stop or an end by MAX_PAGES, what is left
                "redis_queued": str(self._queued),
                "redis_workers": json.dumps(workers),
                "redis_refused": str(self._refused),
                "redis_expired": str(self._expired),
            },
        )

    def snapshot(self) -> Snapshot:
        """The whole crawl's counters, for the progress display."""
        return self.stats.snapshot(
            time.monotonic() - self._started,
            queued=self._queued,
            in_flight=self._leased,
            bytes=self.bytes,
            max_pages=self.max_pages,
        )

    def summary(self, summary: Summary) -> Summary:
        """The stored crawl's report, with this run's figures."""
        summary.elapsed = time.monotonic() - self._started
        summary.pages_this_run = self.stats.pages_this_run
        summary.pages_queued = self._queued  # in Redis: left by MAX_PAGES, or by a stop
        return summary
