"""The crawl's counters as plain records: what the engine reports and the displays show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crawler.http import PageResult


@dataclass(frozen=True, slots=True)
class HostState:
    """One host's share of the frontier."""

    host: str  # "127.0.0.1:8000"
    waiting: int  # requests queued in memory for it
    in_flight: int
    state: str  # "fetching", "capped", "held by DELAY", "held by Retry-After", "waiting"
    delay: float = 0.0  # seconds between two requests to it now (DELAY, Crawl-delay, AUTOTHROTTLE)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's counters at one instant."""

    elapsed: float  # seconds since the run started
    pages_done: int  # pages of this crawl fetched and parsed without error, all runs
    pages_failed: int  # failed for good
    pages_skipped: int  # not fetched, or not kept, on purpose
    pages_redirected: int  # answered with a redirect, whose next hop was queued
    queued: int  # requests waiting (memory + database)
    in_flight: int  # handed out, not yet committed
    items: int  # items of this crawl, all runs
    bytes: int  # body bytes received in this run
    retries: int  # retries in this run
    max_pages: int  # MAX_PAGES (0: unbounded)
    hosts: tuple[HostState, ...]  # the busiest hosts first

    @property
    def pages(self) -> int:
        """Pages committed, of every kind: what pages/s and MAX_PAGES count."""
        return self.pages_done + self.pages_failed + self.pages_skipped + self.pages_redirected


@dataclass(slots=True)
class Stats:
    """A crawl's running totals, over every run of it, updated after each commit: what
    event handlers and hooks see as `stats`."""

    pages_done: int = 0  # fetched and parsed without error
    pages_failed: int = 0  # failed for good
    pages_skipped: int = 0  # not fetched, or not kept, on purpose
    pages_redirected: int = 0  # answered with a redirect, whose next hop was queued
    items: int = 0  # stored
    items_dropped: Counter[str] = field(default_factory=Counter)  # by reason
    pages_this_run: int = 0  # committed by this run, of every kind

    @property
    def pages(self) -> int:
        """Pages committed, of every kind."""
        return self.pages_done + self.pages_failed + self.pages_skipped + self.pages_redirected

    def snapshot(
        self,
        elapsed: float,
        *,
        queued: int = 0,
        in_flight: int = 0,
        bytes: int = 0,
        retries: int = 0,
        max_pages: int = 0,
        hosts: tuple[HostState, ...] = (),
    ) -> Snapshot:
        """These totals with what the process running the crawl knows, for the display."""
        return Snapshot(
            elapsed, self.pages_done, self.pages_failed, self.pages_skipped,
            self.pages_redirected, queued, in_flight, self.items, bytes, retries, max_pages,
            hosts,
        )  # fmt: skip

    def count(self, pages: Iterable[PageResult]) -> None:
        """Add committed pages: each by its outcome, with its items and dropped items."""
        n = 0
        for page in pages:
            n += 1
            if page.skipped:
                self.pages_skipped += 1
            elif page.error:
                self.pages_failed += 1
            elif page.redirected:
                self.pages_redirected += 1
            else:
                self.pages_done += 1
            self.items += len(page.items)
            if page.dropped_items:
                self.items_dropped.update(reason for _, reason in page.dropped_items)
        self.pages_this_run += n

    def add(self, other: Stats) -> None:
        """Add another's totals to these (an earlier run's, read from the database)."""
        self.pages_done += other.pages_done
        self.pages_failed += other.pages_failed
        self.pages_skipped += other.pages_skipped
        self.pages_redirected += other.pages_redirected
        self.items += other.items
        self.items_dropped.update(other.items_dropped)
