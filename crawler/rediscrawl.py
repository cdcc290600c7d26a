"""A crawl kept in Redis (FRONTIER=redis://HOST:PORT/N), from the command line.

`RedisCrawl` is `crawler crawl`: it starts the crawl in Redis (or joins it), collects
every worker's results into the crawl's SQLite file, and crawls too: in this process,
or with `--workers K` in K worker processes beside it. `RedisWorker` is `crawler work`:
one more worker, on any machine. Both run the same engine as a single-process crawl;
only its frontier differs (crawler/redisworker.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from crawler import wire
from crawler.assemble import allowed_domains, parts, settings_for
from crawler.collector import Collector
from crawler.cookies import Jars
from crawler.engine import Engine, closed, start_requests
from crawler.errors import SpiderError, UsageError
from crawler.forked import Forked
from crawler.frontier import LocalFrontier
from crawler.hooks import Crawl, Middlewares
from crawler.http import Callback
from crawler.parse import Parser
from crawler.redisconnect import connect
from crawler.redisfrontier import RedisFrontier
from crawler.redisworker import RedisRobots, RedisWork
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.stats import Snapshot, Stats
from crawler.storage.sqlite import Store, Summary, open_readonly, read_summary

log = logging.getLogger(__name__)

WORKERS_EXIT = 30.0  # seconds worker processes get to exit once the crawl is over


def redis_settings(spider: Spider, overrides: Mapping[str, Any] | None) -> Settings:
    """The settings of a Redis crawl, checked: FRONTIER must name Redis."""
    settings = settings_for(spider, overrides)
    if not settings.frontier.startswith("redis://"):
        raise UsageError("work: needs -s FRONTIER=redis://HOST:PORT/N (the crawl to join)")
    if settings.autothrottle:
        raise UsageError("setting AUTOTHROTTLE: not available with FRONTIER=redis yet")
    return settings


def crawl_frontier(
    client: Redis, spider: Spider, settings: Settings, parser: Parser
) -> RedisFrontier:
    """The crawl's frontier in Redis (CRAWL_ID, or the spider's name); requests come
    back with the spider's methods as callbacks."""
    return RedisFrontier(
        client,
        settings.crawl_id or spider.name,
        settings.per_host,
        settings.delay,
        lease_seconds=settings.lease,
        resolve=_callbacks(parser),
    )


def worker_engine(
    spider: Spider,
    settings: Settings,
    redis: RedisFrontier,
    parser: Parser,
    middlewares: Middlewares,
    domains: list[str],
) -> Engine:
    """An engine whose frontier is a worker's share of the crawl in `redis`."""
    work = RedisWork(redis, LocalFrontier(settings, domains), spider.name)
    shared = RedisRobots(redis, work.worker, settings.user_agent)
    jars = Jars() if settings.cookies else None  # this process's sessions: not shared
    return Engine(spider, settings, work, parser, middlewares, jars=jars, shared_robots=shared)


async def run_worker(engine: Engine) -> Summary:
    """A worker engine's run; then the leases it still holds (pages whose fetch a stop
    cut short) go back to the crawl at once, not when they expire."""
    summary = await engine.run()
    if isinstance(engine.frontier, RedisWork):
        await engine.frontier.abandon()
    return summary


def _callbacks(parser: Parser) -> wire.Resolve:
    def resolve(name: str | None) -> Callback | None:
        try:
            return parser.callback(name)
        except SpiderError as exc:
            raise UsageError(f"a request of the crawl in Redis: {exc}") from None

    return resolve


class RedisWorker:
    """`crawler work`: fetch and parse pages of a crawl in Redis until it ends."""

    def __init__(self, spider: Spider, overrides: Mapping[str, Any] | None) -> None:
        self.spider = spider
        self.settings = redis_settings(spider, overrides)
        self.engine: Engine | None = None
        self._stopped = False

    async def run(self) -> Summary:
        """Join the crawl (waiting for it to start), work, and return what this did."""
        parser, middlewares = parts(self.spider, self.settings)
        client = await connect(self.settings.frontier)
        try:
            redis = crawl_frontier(client, self.spider, self.settings, parser)
            domains = allowed_domains(self.spider, self.settings)
            self.engine = worker_engine(
                self.spider, self.settings, redis, parser, middlewares, domains
            )
            if self._stopped:
                return Summary.of(self.spider.name, self.engine.stats)
            return await run_worker(self.engine)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Ctrl-C: this worker stops; the crawl goes on."""
        self._stopped = True
        if self.engine is not None:
            self.engine.stop()

    def snapshot(self) -> Snapshot:
        """This worker's counters."""
        if self.engine is None:  # still connecting
            return _nothing_yet(self.settings)
        return self.engine.snapshot()


class RedisCrawl:
    """`crawler crawl` with FRONTIER=redis://: start or join, collect, crawl."""

    def __init__(
        self,
        spider: Spider,
        db: Path,
        overrides: Mapping[str, Any] | None,
        *,
        workers: Sequence[Forked] = (),
    ) -> None:
        self.spider = spider
        self.db = db
        self.settings = redis_settings(spider, overrides)
        self.collector: Collector | None = None
        self.engine: Engine | None = None
        # Worker processes, let go once the crawl is begun; none: crawl in this process.
        self._processes = list(workers)
        self._waited = False
        self._stopping = False
        self._lost = ""  # why the crawl stopped by itself, if it did

    async def run(self) -> Summary:
        """The crawl, until it is over or stopped; its report."""
        settings, spider = self.settings, self.spider
        parser, middlewares = parts(spider, settings)
        domains = allowed_domains(spider, settings)  # START_URL replaces the start URLs
        start = start_requests(spider, settings, parser)  # checked before anything is touched
        client = await connect(settings.frontier)
        try:
            redis = crawl_frontier(client, spider, settings, parser)
            await self._check_db(redis)
            store = Store(self.db, spider.name)
            async with store:
                begun = await redis.begin(spider.name, start, settings.max_pages, settings.robots)
                await store.note("redis_crawl", f"{redis.crawl_id} {begun.token}")
                verb = "started" if begun.created else "joined"
                log.info("%s crawl %r in Redis; collecting into %s", verb, redis.crawl_id, self.db)
                collector = self.collector = Collector(redis, store, settings.max_pages)
                if self._stopping:
                    collector.stop()
                ended = await self._crawl(collector, redis, parser, middlewares, domains)
                with closing(open_readonly(self.db)) as db:
                    summary = collector.summary(read_summary(db))
                if ended:
                    crawl = Crawl(spider, settings, self.db, collector.stats, self.stop)
                    await closed(spider, store, crawl, summary)
            if self._lost:
                raise UsageError(f"{self._lost}; the crawl is stopped: run it again to resume")
            return summary
        finally:
            for process in self._processes:  # bad input: those not let go exit at once
                process.cancel()
            await self._wait_workers()
            await client.aclose()

    async def _crawl(
        self,
        collector: Collector,
        redis: RedisFrontier,
        parser: Parser,
        middlewares: Middlewares,
        domains: list[str],
    ) -> bool:
        """The collector, beside the workers of this process (or its worker processes)."""
        watch: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            if self._processes:
                for process in self._processes:
                    process.go()
                watch = tg.create_task(self._watch_workers(collector), name="watch")
            else:
                self.engine = worker_engine(
                    self.spider, self.settings, redis, parser, middlewares, domains
                )
                tg.create_task(run_worker(self.engine), name="worker")
            ended = await collector.run()
            if self.engine is not None:
                self.engine.frontier.stop()  # nothing is leased: it ends at once
            if watch is not None:
                watch.cancel()
            await self._wait_workers()
        return ended

    async def _watch_workers(self, collector: Collector) -> None:
        """Stop the crawl if every worker process has exited before its end (a spider
        that does not load in them, say): no one would crawl."""
        codes = await asyncio.gather(*(process.wait() for process in self._processes))
        if not self._stopping and not collector.over:
            self._lost = f"every worker process exited (status {codes[0]})"
            log.error("%s: stopping the crawl", self._lost)
            self.stop()

    async def _wait_workers(self) -> None:
        """Until every worker process has exited (once; those still up after WORKERS_EXIT
        are terminated)."""
        if self._waited:
            return
        self._waited = True
        for process in self._processes:
            try:
                async with asyncio.timeout(WORKERS_EXIT):
                    code = await process.wait()
            except TimeoutError:
                log.warning("worker process %d did not exit: terminating it", process.pid)
                process.terminate()
                code = await process.wait()
            # 130: a worker stopped by the Ctrl-C that stop() passes on to it
            if code not in (0, 130, -signal.SIGINT, -signal.SIGTERM):
                log.warning("worker process %d exited with status %d", process.pid, code)

    async def _check_db(self, redis: RedisFrontier) -> None:
        """Refuse a --db that holds another crawl; never writes."""
        if not self.db.exists():
            return
        with closing(open_readonly(self.db)) as db:
            row = db.execute("SELECT value FROM crawl WHERE key = 'redis_crawl'").fetchone()
            pages = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        meta = await redis.meta()
        if row is None:
            if pages:
                raise UsageError(
                    f"{self.db} holds a crawl run without Redis; use another --db for this one"
                )
            return
        crawl_id, _, token = str(row[0]).partition(" ")
        if crawl_id != redis.crawl_id:
            raise UsageError(f"{self.db} holds Redis crawl {crawl_id!r}, not {redis.crawl_id!r}")
        if meta is None:
            raise UsageError(
                f"{self.db} holds Redis crawl {crawl_id!r}, which Redis no longer has;"
                " use another --db to start it again"
            )
        if meta.token != token:
            raise UsageError(
                f"{self.db} holds an earlier crawl named {crawl_id!r}, not the one in Redis now;"
                " use another --db"
            )

    def stop(self) -> None:
        """Ctrl-C: stop the crawl for every worker, resumable."""
        self._stopping = True
        if self.collector is not None:
            self.collector.stop()
        if self.engine is not None:
            self.engine.stop()
        for process in self._processes:
            process.signal(signal.SIGINT)

    def snapshot(self) -> Snapshot:
        """The whole crawl's counters."""
        if self.collector is None:  # still connecting
            return _nothing_yet(self.settings)
        return self.collector.snapshot()


def _nothing_yet(settings: Settings) -> Snapshot:
    return Stats().snapshot(0.0, max_pages=settings.max_pages)
