"""The crawl's counters as plain records: what the engine reports and the displays show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostState:
    """One host's share of the frontier."""

    host: str  # "127.0.0.1:8000"
    waiting: int  # requests queued in memory for it
    in_flight: int
    state: str  # "fetching", "capped", "held by DELAY", "held by Retry-After", "waiting"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's counters at one instant."""

    elapsed: float  # seconds since the run started
    pages_done: int  # committed pages of this crawl, all runs (done + failed + skipped)
    pages_failed: int
    queued: int  # requests waiting (memory + database)
    in_flight: int  # handed out, not yet committed
    items: int  # items of this crawl, all runs
    bytes: int  # body bytes received in this run
    retries: int  # retries in this run
    max_pages: int  # MAX_PAGES (0: unbounded)
    hosts: tuple[HostState, ...]  # the busiest hosts first
