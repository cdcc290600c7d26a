"""A worker's share of a crawl kept in Redis: the `Frontier` the engine runs on in
`crawler work` (and in `crawler crawl` with FRONTIER=redis://, beside its collector).

Requests come leased from the crawl (crawler/redisfrontier.py), as many as there are
idle fetch workers, from hosts that are due now; each lease is renewed every third of
its time while its page is in flight or waiting to be parsed. `commit` finishes each
page's lease with its result (crawler/results.py) and the links that passed this
worker's own checks (invalid, off-domain, MAX_DEPTH, seen lately here); Redis admits
the new ones, and the collector stores the result. A finish under a lost lease is
refused: another worker has the page, and this result is dropped.

The worker stops when the crawl's state in Redis says so (the collector ended or
stopped it), or on `stop()` (its own Ctrl-C): pages in flight are finished first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from protego import Protego

from crawler import results, wire
from crawler.errors import UsageError
from crawler.frontier import LocalFrontier
from crawler.http import PageResult, Request
from crawler.redisfrontier import Lease, RedisFrontier
from crawler.robots import UNREACHABLE, SharedRobots
from crawler.stats import Stats
from crawler.urls import host_of

log = logging.getLogger(__name__)

IDLE_POLL = 0.1  # seconds between two lease calls while no host is due
MAX_POLL = 0.5  # at most this long, even when the next host is due later
TICK = 1.0  # seconds between two looks at the crawl's state, at most
WAIT_LOG = 10.0  # seconds between two "waiting for the crawl" lines


class RedisWork:
    """A worker process's frontier: leases from Redis, finishes into Redis."""

    def __init__(
        self,
        redis: RedisFrontier,
        admission: LocalFrontier,
        spider: str,
        worker: str | None = None,
    ) -> None:
        self.redis = redis
        self._admission = admission  # only its `admit`: this worker's own link checks
        self.spider = spider
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._wake = asyncio.Event()  # a fetch worker is idle, or a page freed its host slot
        self._idle = 0
        self._held: dict[int, Lease] = {}  # token -> lease, until its page is finished
        self._released: list[int] = []  # leases whose fetch is over: their host slots go
        self._unstarted: list[int] = []  # leases never handed to a fetcher, at a stop
        self._tasks: set[asyncio.Task[Any]] = set()
        self._delayed: set[str] = set()  # hosts whose Crawl-delay this worker has told Redis
        self._closed = False
        self._queued = 0  # the crawl's queued requests, as last seen
        self.pages = 0  # pages this worker finished
        self.refused = 0  # finishes refused: the lease had been lost

    # -- the engine's side --------------------------------------------------------

    async def open(self, start: Sequence[Request]) -> Stats:
        """Wait for the crawl to exist in Redis and run (its collector creates or resumes
        it), and check that it is this spider's; `start` is the collector's business."""
        waited = 0.0
        while not self._closed:
            meta = await self.redis.meta()
            if meta is not None and meta.spider != self.spider:
                raise UsageError(
                    f"crawl {self.redis.crawl_id!r} in Redis belongs to spider "
                    f"{meta.spider!r}, not {self.spider!r}"
                )
            if meta is not None and meta.format != wire.FORMAT:
                raise UsageError(self.redis.format_problem(meta.format))
            if meta is not None and meta.state != "stopped":
                break
            if waited % WAIT_LOG < 0.5:
                what = "start" if meta is None else "be resumed"
                log.info("waiting for crawl %r in Redis to %s", self.redis.crawl_id, what)
            await asyncio.sleep(0.5)
            waited += 0.5
        return Stats()

    async def feed(self) -> None:
        """Lease requests for the idle fetch workers until the crawl ends or stops;
        renew the leases held, and tell the crawl this worker is alive."""
        next_tick = 0.0
        try:
            while not self._closed:
                now = time.monotonic()
                if now >= next_tick:
                    await self._tick()
                    next_tick = now + min(TICK, self.redis.lease_seconds / 3)
                    if self._closed:
                        break
                want = max(self._idle - self._queue.qsize(), 0)
                self._wake.clear()
                if want == 0 and not self._released:
                    await _wait(self._wake, next_tick - time.monotonic())
                    continue
                released, self._released = self._released, []
                leased = await self.redis.lease(self.worker, want, released)
                if self._closed:  # stopped while the call was out: none of them is fetched
                    self._unstarted.extend(lease.token for lease in leased.leases)
                    break
                for lease in leased.leases:
                    request = lease.request
                    request.key = lease.token
                    self._held[lease.token] = lease
                    self._queue.put_nowait(request)
                if want and not leased.leases:  # until a host is due, or a slot is freed
                    pause = IDLE_POLL if leased.wait is None else min(leased.wait, MAX_POLL)
                    await _wait(self._wake, max(pause, 0.002))
        finally:
            self._close()
            unstarted, self._unstarted = self._unstarted, []
            if unstarted:  # at once, not when their leases expire
                await self.redis.give_back(unstarted)
            await self.redis.leave(self.worker)

    async def get(self) -> Request | None:
        """The next leased request; None once the crawl is over or stopped."""
        if self._closed:
            return None
        self._idle += 1
        self._wake.set()
        try:
            return await self._queue.get()
        finally:
            self._idle -= 1

    def release(self, request: Request, *, network: bool = True) -> None:
        """The fetch is over: its host slot is freed with the next lease call."""
        self._released.append(request.key)
        self._wake.set()

    async def commit(self, pages: list[PageResult]) -> None:
        """Finish each page's lease with its result and the links it found."""
        finishing, leased = [], []
        for page in pages:
            admission = self._admission.admit(page.requests, page.request)
            page.requests = admission.accepted
            page.dropped = admission.dropped
            lease = self._held.pop(page.request.key, None)
            if lease is None:  # given up at a stop, or a page the worker never leased
                log.warning("%s: no lease held for it; its result is dropped", page.request.url)
                self._admission.forget(page.requests)
                continue
            finishing.append((lease, results.encode(page), page.requests))
            leased.append(page)
        answers = await self.redis.finish_many(finishing)
        self._wake.set()  # their host slots are free: there may be more to lease
        for page, answer in zip(leased, answers, strict=True):
            if answer.ok:
                self.pages += 1
                continue
            self.refused += 1
            self._admission.forget(page.requests)  # they were not admitted: send them again
            log.warning(
                "%s: lease %d was lost (this worker was too slow, or cut off from Redis);"
                " another worker has the page, this result is dropped",
                page.request.url, page.request.key,
            )  # fmt: skip

    async def abandon(self) -> int:
        """Once the engine is done: the leases still held are of pages it will never
        finish (their fetch was cut short at a stop). They go back to their hosts' queues
        now, not when they expire; how many did."""
        tokens = list(self._held)
        self._held.clear()
        if not tokens:
            return 0
        back = await self.redis.give_back(tokens)
        log.info("%d pages cut short by the stop are queued again", back)
        return back

    def hold(self, url: str, seconds: float) -> None:
        """Hold the URL's host for every worker (Retry-After)."""
        self._spawn(self.redis.hold(host_of(url), seconds))

    def learned(self, url: str, crawl_delay: float) -> None:
        """robots.txt asks for `crawl_delay` between requests: for every worker (told
        once per host by this one)."""
        if crawl_delay > 0:
            host = host_of(url)
            if host not in self._delayed:
                self._delayed.add(host)
                self._spawn(self.redis.hold(host, crawl_delay, "Crawl-delay"))

    def answered(self, url: str, latency: float, status: int) -> None:
        """AUTOTHROTTLE is per process and not used with Redis (assemble refuses it)."""

    def stop(self) -> None:
        """Lease nothing more; the pages in flight are still finished."""
        self._close()

    def busiest(self, count: int) -> list[tuple[str, int, int, str, float]]:
        """The hosts this worker has pages of in flight (the whole crawl's are in Redis)."""
        hosts: dict[str, int] = {}
        for lease in self._held.values():
            hosts[lease.host] = hosts.get(lease.host, 0) + 1
        top = sorted(hosts.items(), key=lambda pair: -pair[1])[:count]
        return [(host, 0, n, "fetching", 0.0) for host, n in top]

    @property
    def pending(self) -> int:
        """The crawl's queued requests, as last seen in Redis."""
        return self._queued

    @property
    def outstanding(self) -> int:
        """Leases this worker holds."""
        return len(self._held)

    # -- inside ---------------------------------------------------------------------

    async def _tick(self) -> None:
        """Renew the leases held; heartbeat; stop if the crawl has ended or stopped."""
        tokens = list(self._held)
        if tokens:
            kept = await self.redis.renew(tokens)
            lost = [t for t, ok in zip(tokens, kept, strict=True) if not ok and t in self._held]
            if lost:
                log.warning("%d leases lost before their pages were done", len(lost))
        meta = await self.redis.meta()
        state = meta.state if meta is not None else "gone"
        if state in ("ended", "stopped", "gone"):
            log.info("crawl %r %s: this worker stops", self.redis.crawl_id, state)
            self._close()
        counts = await self.redis.counts()
        self._queued = counts.queued
        await self.redis.heartbeat(
            self.worker,
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "pages": self.pages,
                "leases": len(self._held),
                "refused": self.refused,
            },
        )

    def _spawn(self, call: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._queue.empty():  # leased, never fetched: given back as feed() ends
            request = self._queue.get_nowait()
            if request is not None:
                self._held.pop(request.key, None)
                self._unstarted.append(request.key)
        for _ in range(self._idle):
            self._queue.put_nowait(None)


class RedisRobots(SharedRobots):
    """robots.txt kept in the crawl's Redis, fetched once per host for every worker."""

    def __init__(self, redis: RedisFrontier, worker: str, user_agent: str) -> None:
        self.redis = redis
        self.worker = worker
        self.user_agent = user_agent

    async def take(self, netloc: str) -> tuple[str | None, bool]:
        """The host's robots.txt if kept; else whether this worker is to fetch it."""
        answer = await self.redis.robots(netloc.lower(), self.worker)
        return answer.text, answer.fetch

    async def put(self, netloc: str, text: str) -> None:
        """Keep the host's robots.txt for every worker, its Crawl-delay held first: the
        host's one-at-a-time cap lifts only then."""
        host = netloc.lower()
        if text != UNREACHABLE:
            delay = Protego.parse(text).crawl_delay(self.user_agent)
            if delay:
                await self.redis.hold(host, float(delay), "Crawl-delay")
        await self.redis.set_robots(host, text)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
