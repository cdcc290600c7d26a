"""What to fetch next: admission (fingerprints, depth, domains), priority, per-host readiness.

The frontier is the memory side of the crawl's `requests` table, which holds the
whole seen-set and every queued request. The frontier owns the seen-set, and it is the
one place that decides what is new: the store's unique index on fingerprints is its
record, and in memory the fingerprints of the last RECENT admitted and the verdicts on
the last RECENT URLs are caches of that index, which catch most duplicate links before
they reach SQLite. Every request it admits gets its row key here and is written by the
store in the same transaction as the page that found it (the index drops those seen
before); only then is it `push`ed. Memory holds a bounded window: at most WINDOW queued
requests. Queued requests past the window stay in the database, and are loaded in key
order (`refill`) as the window empties.

A redirect's next hop (`Request.redirects` more than its page's) is admitted here like
any request, at its page's depth, and its drops are counted as "redirect to a page
already crawled", "redirect off-domain" or "redirect to an invalid URL".

Hand-out is per host. Each host has its own priority heap; a host is *ready* when it
has pending requests, fewer than PER_HOST in flight, and no DELAY or Retry-After
hold. Ready requests move into one `asyncio.Queue` that the fetch workers read, and
only as many as there are idle workers, so a capped or slowed host never holds a
worker that another host could use, and priorities hold across hosts. With
AUTOTHROTTLE, a host's delay follows its latency and its 429/503s (`answered()`,
crawler/throttle.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from crawler.http import Request
from crawler.settings import Settings
from crawler.throttle import AutoThrottle
from crawler.urls import check_url, fingerprint, host_of, in_domains

log = logging.getLogger(__name__)

WINDOW = 20_000  # queued requests held in memory at most
RECENT = 50_000  # fingerprints remembered in memory to skip SQLite for common duplicates
_HOP_REASONS = {  # why a redirect's next hop is dropped, by the reason a link would be
    "duplicate": "redirect to a page already crawled",
    "off-domain": "redirect off-domain",
    "invalid URL": "redirect to an invalid URL",
}


K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A map that keeps about the last `size` keys put or found: two generations of
    dicts, the older dropped whole when the newer is full. O(1) per operation; evicting
    from the front of one ordered dict is not (its iteration skips the deleted slots)."""

    __slots__ = ("_half", "_new", "_old")

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)  # still in use: keep it
        return value

    def put(self, key: K, value: V) -> None:
        new = self._new
        new[key] = value
        if len(new) >= self._half:
            self._old, self._new = new, {}

    def discard(self, key: K) -> None:
        """Forget `key`, if it is here."""
        self._new.pop(key, None)
        self._old.pop(key, None)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


@dataclass(slots=True)
class _Host:
    heap: list[tuple[int, int, Request]] = field(default_factory=list)
    in_flight: int = 0
    held_until: float = 0.0
    delay: float = 0.0
    floor: float = 0.0  # the least delay: DELAY, or Crawl-delay if larger (for AUTOTHROTTLE)
    timer: asyncio.TimerHandle | None = None
    known: bool = True  # False until robots.txt is read (with AUTOTHROTTLE and no ROBOTS,
    # until its first answer): one request at a time till then
    last_start: float = 0.0
    previous_hold: float = 0.0
    hold_reason: str = "DELAY"
    delay_reason: str = "DELAY"  # what sets `delay`: DELAY, Crawl-delay or AUTOTHROTTLE


@dataclass(slots=True)
class Admission:
    """The requests a page may add, and why the others were dropped."""

    accepted: list[Request] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


class KeyRange(NamedTuple):
    """Queued requests to load from the database: keys in (after, upto], at most limit."""

    after: int
    upto: int
    limit: int


class LocalFrontier:
    """Admits, orders and hands out the requests of one process's crawl; knows when it is over."""

    def __init__(self, settings: Settings, allowed_domains: Iterable[str] = ()) -> None:
        self._probe_hosts = settings.robots  # learn a host's robots.txt before crowding it
        self._per_host = settings.per_host
        self._delay = settings.delay
        self._throttle = (
            AutoThrottle(settings.autothrottle_target_concurrency, settings.autothrottle_max_delay)
            if settings.autothrottle
            else None
        )
        self._max_depth = settings.max_depth
        self._max_pages = settings.max_pages
        self._domains = frozenset(d.lower().strip(".") for d in allowed_domains if d)
        self._recent: Recent[bytes, bool] = Recent(RECENT)  # fingerprints admitted lately
        self._verdicts: Recent[str, str] = Recent(RECENT)  # URL as spelled -> refusal, or ""
        self._next_key = 1
        self._window = WINDOW
        self._in_db = 0  # queued requests only in the database (keys > _loaded)
        self._loaded = 0  # every queued request with a key up to this one is in memory
        self._committed = 0  # the highest key the store has committed
        self._refill = asyncio.Event()
        self._hosts: dict[str, _Host] = {}
        self._ready: list[tuple[int, int, str]] = []  # (-priority, seq, host), may be stale
        self._ready_set: set[str] = set()
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._seq = itertools.count()
        self._idle = 0
        self._pending = 0
        self._outstanding = 0  # handed out and not yet committed
        self._started = 0  # pages handed out, over every run of this crawl
        self._closed = False

    # -- admission: what enters the crawl ------------------------------------------

    def restore(self, next_key: int, pages_started: int, queued: int) -> None:
        """Take the counters of a crawl stored earlier; its queue is loaded by `refill`."""
        self._next_key = max(self._next_key, next_key)
        self._committed = next_key - 1
        self._started = pages_started
        self._in_db = queued
        if queued:
            self._refill.set()

    def admit(self, requests: Sequence[Request], parent: Request | None) -> Admission:
        """Filter new requests; those accepted get their row key and depth. A request
        accepted here may still be a duplicate that only the store's index knows."""
        if parent is None:
            depth = 0
        elif requests and requests[0].redirects > parent.redirects:
            return self._admit_hop(requests, parent)
        else:
            depth = parent.depth + 1
        result = Admission()
        dropped = result.dropped
        if self._max_depth and depth > self._max_depth:
            for _ in requests:
                dropped["MAX_DEPTH"] += 1
            return result
        verdicts = self._verdicts
        duplicates = 0
        for request in requests:
            url = request.url
            # Most links on a page were seen before, spelled the same: one lookup.
            plain = request.method == "GET" and not request.body and not request.dont_filter
            verdict = verdicts.get(url) if plain else None
            if verdict is None:
                verdict, fp = self._verdict(request)
                if plain:
                    verdicts.put(url, verdict)
                if verdict == "":
                    result.accepted.append(self._admitted(request, depth, fp))
                    continue
            if verdict:
                dropped[verdict] += 1
            else:
                duplicates += 1
        if duplicates:
            dropped["duplicate"] += duplicates
        return result

    def _admit_hop(self, hops: Sequence[Request], parent: Request) -> Admission:
        """A redirect's next hop: admitted as a link would be, but at its page's depth
        (it stands for that page), and its drops named as a redirect's."""
        result = Admission()
        for hop in hops:
            verdict, fp = self._verdict(hop)
            if verdict:
                result.dropped[_HOP_REASONS[verdict]] += 1
            else:
                result.accepted.append(self._admitted(hop, parent.depth, fp))
        return result

    def _verdict(self, request: Request) -> tuple[str, bytes]:
        """Why the request is refused, "duplicate", or "" if it is new (and now recent);
        with its fingerprint, once computed."""
        url = request.url
        problem = check_url(url)
        if problem:
            return "invalid URL", b""
        if self._domains and not in_domains(url, self._domains):
            return "off-domain", b""
        fp = fingerprint(request.method, url, request.body)
        if fp in self._recent and not request.dont_filter:
            return "duplicate", fp
        self._recent.put(fp, True)
        return "", fp

    def forget(self, requests: Iterable[Request]) -> None:
        """Requests admitted here that never reached the crawl (a Redis worker's finish
        was refused): forget them, so the next link to each is admitted again."""
        for request in requests:
            self._recent.discard(request.fp)
            self._verdicts.discard(request.url)

    def _admitted(self, r: Request, depth: int, fp: bytes) -> Request:
        """A copy of `r` with its depth, row key and fingerprint."""
        key = self._next_key
        self._next_key += 1
        return Request.make(
            r.url,
            r.callback,
            r.method,
            r.headers,
            r.body,
            r.meta,
            r.priority,
            r.dont_filter,
            r.errback,
            depth,
            r.redirects,
            key,
            fp,
            r.cookies,
        )

    # -- hand-out: what the fetch workers get -----------------------------------------

    def push(self, requests: list[Request], committed: int) -> None:
        """Requests the store has just committed (keys up to `committed`): into the
        window if it has room and nothing older waits in the database, else left there."""
        self._committed = max(self._committed, committed)
        if self._in_db or self._pending + len(requests) > self._window:
            self._in_db += len(requests)
            self._refill.set()
            self._dispatch()
            return
        self._loaded = self._committed
        self._add(requests)

    def load(self, requests: list[Request], upto: int) -> None:
        """Queued requests read from the database: every one with a key up to `upto`."""
        self._in_db -= len(requests)
        self._loaded = upto
        self._add(requests)

    def refill_range(self) -> KeyRange | None:
        """The keys to load next, or None if nothing is needed."""
        if self._in_db and self._pending < self._window // 2:
            return KeyRange(self._loaded, self._committed, self._window - self._pending)
        self._refill.clear()
        return None

    async def wait_refill(self) -> bool:
        """Wait until the window wants loading; False once the crawl is over."""
        while not self._closed:
            await self._refill.wait()
            if self._closed:
                break
            if self.refill_range() is not None:
                return True
        return False

    def _add(self, requests: Iterable[Request]) -> None:
        for request in requests:
            host = host_of(request.url)
            state = self._hosts.get(host)
            if state is None:
                # Unknown until robots.txt is read, or with AUTOTHROTTLE its first answer
                # (its latency unknown): one request at a time till then.
                known = not self._probe_hosts and self._throttle is None
                state = self._hosts[host] = _Host(delay=self._delay, floor=self._delay, known=known)
            heapq.heappush(state.heap, (-request.priority, next(self._seq), request))
            self._pending += 1
            self._mark_ready(host, state)
        self._dispatch()

    async def get(self) -> Request | None:
        """The next request to fetch; None once the crawl is over or stopped."""
        if self._closed:
            return None
        self._idle += 1
        self._dispatch()
        try:
            return await self._queue.get()
        finally:
            self._idle -= 1

    def release(self, request: Request, *, network: bool = True) -> None:
        """The fetch of `request` is over: its host slot is free. Without `network` (a
        cached response) the DELAY hold it started is undone."""
        host = host_of(request.url)
        state = self._hosts[host]
        state.in_flight -= 1
        if not network and state.held_until > state.previous_hold:
            state.held_until = state.previous_hold
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
        self._mark_ready(host, state)
        self._dispatch()

    def learned(self, url: str, crawl_delay: float) -> None:
        """The URL's host has had its robots.txt read: lift the one-at-a-time cap, and
        keep at least `crawl_delay` seconds between its requests if that is more than DELAY."""
        host = host_of(url)
        state = self._hosts.get(host)
        if state is None or state.known:
            return
        state.known = True
        state.floor = max(state.floor, crawl_delay)
        if crawl_delay > state.delay:
            state.delay = crawl_delay
            state.delay_reason = "Crawl-delay"
            self._hold(host, state, state.last_start + crawl_delay, "Crawl-delay")
        self._mark_ready(host, state)
        self._dispatch()

    def answered(self, url: str, latency: float, status: int) -> None:
        """A try to the URL's host got an answer with `status` after `latency` seconds:
        with AUTOTHROTTLE, the host's delay follows (crawler/throttle.py)."""
        host = host_of(url)
        state = self._hosts.get(host)
        if state is None or self._throttle is None:
            return
        before = state.delay
        state.delay = self._throttle.delay(before, state.floor, latency, status)
        if state.delay != before:
            floor = "Crawl-delay" if state.floor > self._delay else "DELAY"
            state.delay_reason = "AUTOTHROTTLE" if state.delay > state.floor else floor
            log.debug(
                "AUTOTHROTTLE %s: delay %.3f s -> %.3f s (%d in %.3f s)",
                host, before, state.delay, status, latency,
            )  # fmt: skip
            if state.delay > before and state.last_start:
                self._hold(host, state, state.last_start + state.delay, state.delay_reason)
        if not state.known and not self._probe_hosts:  # robots.txt's answer waits for `learned`
            state.known = True
            self._mark_ready(host, state)
            self._dispatch()

    def done(self, request: Request) -> None:
        """The page of `request` is committed; the crawl may be over."""
        self._outstanding -= 1
        self._dispatch()
        if self._in_db and self._pending < self._window // 2:
            self._refill.set()

    def hold(self, url: str, seconds: float) -> None:
        """Hand out nothing for the URL's host for `seconds` (a retry's wait, Retry-After)."""
        host = host_of(url)
        state = self._hosts.get(host)
        if state is not None:
            self._hold(host, state, time.monotonic() + seconds, "Retry-After")

    def busiest(self, count: int) -> list[tuple[str, int, int, str, float]]:
        """The hosts with the most requests waiting or in flight:
        (host, waiting, in flight, state, delay)."""
        now = time.monotonic()
        top = heapq.nlargest(
            count, self._hosts.items(), key=lambda pair: len(pair[1].heap) + pair[1].in_flight
        )
        return [
            (host, len(state.heap), state.in_flight, self._state_of(state, now), state.delay)
            for host, state in top
            if state.heap or state.in_flight
        ]

    def _state_of(self, state: _Host, now: float) -> str:
        if state.in_flight >= (self._per_host if state.known else 1) and state.heap:
            return "capped"
        if state.held_until > now and state.heap:
            return f"held by {state.hold_reason}"
        return "fetching" if state.in_flight else "waiting"

    def stop(self) -> None:
        """Hand out nothing more; workers get None once they ask."""
        self._close()

    @property
    def pending(self) -> int:
        """Requests waiting to be handed out, in memory and in the database."""
        return self._pending + self._in_db

    @property
    def outstanding(self) -> int:
        """Requests handed out whose pages are not committed yet."""
        return self._outstanding

    def _hold(self, host: str, state: _Host, until: float, reason: str = "DELAY") -> None:
        if until <= state.held_until:
            return
        state.held_until = until
        state.hold_reason = reason
        if state.timer is not None:
            state.timer.cancel()
        loop = asyncio.get_running_loop()
        state.timer = loop.call_at(loop.time() + until - time.monotonic(), self._unhold, host)

    def _unhold(self, host: str) -> None:
        state = self._hosts[host]
        state.timer = None
        self._mark_ready(host, state)
        self._dispatch()

    def _mark_ready(self, host: str, state: _Host) -> None:
        cap = self._per_host if state.known else 1
        if host in self._ready_set or not state.heap or state.in_flight >= cap:
            return
        if state.held_until > time.monotonic():
            return
        priority, seq, _ = state.heap[0]
        heapq.heappush(self._ready, (priority, seq, host))
        self._ready_set.add(host)

    def _dispatch(self) -> None:
        # No await in here: the counts and the queue change together.
        if self._closed:
            return
        while self._ready and self._queue.qsize() < self._idle:
            if self._max_pages and self._started >= self._max_pages:
                break
            _, _, host = heapq.heappop(self._ready)
            self._ready_set.discard(host)
            state = self._hosts[host]
            _, _, request = heapq.heappop(state.heap)
            self._pending -= 1
            self._outstanding += 1
            self._started += 1
            state.in_flight += 1
            state.last_start = now = time.monotonic()
            state.previous_hold = state.held_until
            if state.delay:
                self._hold(host, state, now + state.delay, state.delay_reason)
            self._mark_ready(host, state)
            self._queue.put_nowait(request)
        if self._outstanding == 0 and (
            (self._pending == 0 and self._in_db == 0)
            or (self._max_pages and self._started >= self._max_pages)
        ):
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for state in self._hosts.values():
            if state.timer is not None:
                state.timer.cancel()
        self._refill.set()  # wakes the refill loop, which sees _closed
        # Workers waiting now get None; any that ask later see _closed.
        for _ in range(self._idle):
            self._queue.put_nowait(None)
        log.debug("frontier closed: %d pending, %d outstanding", self._pending, self._outstanding)
