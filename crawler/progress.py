"""What a running crawl is doing: a live display on a terminal, a log line elsewhere.

Owns the display only. The engine hands in `snapshot()`, a callable returning a `Snapshot`
of its counters; `Progress.run()` calls it at most 4 times a second on the event loop
(every `every` seconds when not live), so progress costs nothing per page.

- live (stderr is a terminal): one `rich` Live display, redrawn every 0.25 s from the
  loop, never from a thread. `handler()` prints log records through the same Console,
  so they scroll above the display instead of tearing it.
- not live (CI, a log file), or a dumb terminal (TERM=dumb): no escape codes; a line
  through the `crawler.progress` logger every `every` seconds.

Pages/s is measured over the last ~5 s (live) or the last interval (not live). The ETA
is shown only when the remaining work is bounded: by MAX_PAGES, or by the queue once it
has stopped growing over that window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.live import Live
from rich.text import Text

from crawler.stats import HostState, Snapshot

log = logging.getLogger("crawler.progress")

TICK = 0.25  # seconds between two frames of the live display
WINDOW = 5.0  # seconds of snapshots behind the live pages/s
BAR_WIDTH = 40  # characters of the MAX_PAGES bar
HOST_WIDTH = 40  # longer host names are cut
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STATE_STYLES = {
    "fetching": "green",
    "capped": "yellow",
    "held by DELAY": "cyan",
    "held by Crawl-delay": "cyan",
    "held by AUTOTHROTTLE": "cyan",
    "held by Retry-After": "magenta",
    "waiting": "dim",
}
_LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the recent snapshots say: pages/s, and seconds left when the work is bounded."""

    rate: float | None  # None until two snapshots are apart in time
    eta: float | None  # None when unbounded, or bounded but nothing is moving


class Window:
    """The last few snapshots: the recent rate, and whether the queue still grows."""

    def __init__(self, samples: int) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=max(samples, 2))

    def push(self, snap: Snapshot) -> Estimate:
        """Add one snapshot; the estimate over the window it completes."""
        self._samples.append((snap.elapsed, snap.pages, snap.queued))
        (t0, done0, queued0), (t1, done1, _) = self._samples[0], self._samples[-1]
        rate = (done1 - done0) / (t1 - t0) if t1 > t0 else None
        full = len(self._samples) == self._samples.maxlen
        return Estimate(rate, _eta(snap, rate, settled=full and snap.queued <= queued0))


def _eta(snap: Snapshot, rate: float | None, *, settled: bool) -> float | None:
    bounds = [snap.queued + snap.in_flight] if settled else []
    if snap.max_pages:
        bounds.append(max(snap.max_pages - snap.pages, 0))
    if not bounds:
        return None
    remaining = min(bounds)
    if remaining == 0:
        return 0.0
    return remaining / rate if rate else None


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}"


def _per_second(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 10 else f"{rate:,.0f}"


def plain_line(snap: Snapshot, est: Estimate) -> str:
    """One progress line without escape codes, for logs."""
    parts = [
        f"{snap.pages:,} pages ({_per_second(est.rate)}/s)",
        f"{snap.pages_done:,} done",
        f"{snap.pages_failed:,} failed",
        f"{snap.queued:,} queued",
        f"{snap.in_flight:,} in flight",
        f"{snap.items:,} items",
        decimal(snap.bytes),
        f"{clock(snap.elapsed)} elapsed",
    ]
    if snap.retries:
        parts.insert(3, f"{snap.retries:,} retries")
    if est.eta is not None:
        parts.append(f"ETA {clock(math.ceil(est.eta))}")
    return ", ".join(parts)


def frame(snap: Snapshot, est: Estimate, *, ascii_only: bool = False) -> Text:
    """The live display for one snapshot: plain Text lines, cheap to build and render."""
    text = _counters(snap).append("\n").append_text(_speed(snap, est))
    if snap.max_pages:
        text.append("\n").append_text(_bar(snap, ascii_only))
    if snap.hosts:
        text.append("\n").append_text(_hosts(snap.hosts))
    return text


def _figures(*pairs: tuple[str, str]) -> Text:
    text = Text(" ")
    for value, label in pairs:
        text.append(value, style="bold").append(f" {label}   ")
    text.rstrip()
    return text


def _counters(snap: Snapshot) -> Text:
    return _figures(
        (f"{snap.pages_done:,}", "done"),
        (f"{snap.queued:,}", "queued"),
        (f"{snap.in_flight:,}", "in flight"),
        (f"{snap.pages_failed:,}", "failed"),
        (f"{snap.pages_skipped:,}", "skipped"),
        (f"{snap.retries:,}", "retries"),
        (f"{snap.items:,}", "items"),
    )


def _speed(snap: Snapshot, est: Estimate) -> Text:
    text = _figures(
        (_per_second(est.rate), "pages/s"),
        (decimal(snap.bytes), "received"),
        (clock(snap.elapsed), "elapsed"),
    )
    eta = "-" if est.eta is None else clock(math.ceil(est.eta))  # 0:00:00 only when done
    return text.append("   ETA ").append(eta, style="bold")


def _bar(snap: Snapshot, ascii_only: bool) -> Text:
    done = min(snap.pages, snap.max_pages)
    filled = BAR_WIDTH * done // snap.max_pages
    full, empty = ("#", "-") if ascii_only else ("━", "─")
    text = Text(" ").append(full * filled, style="green")
    text.append(empty * (BAR_WIDTH - filled), style="bright_black")
    return text.append(f"  {done / snap.max_pages:.0%} of MAX_PAGES {snap.max_pages:,}")


def _hosts(hosts: tuple[HostState, ...]) -> Text:
    names = [
        h.host if len(h.host) <= HOST_WIDTH else h.host[: HOST_WIDTH - 3] + "..." for h in hosts
    ]
    width = max(4, *map(len, names))
    delays = any(h.delay for h in hosts)  # DELAY, Crawl-delay or AUTOTHROTTLE at work
    head = f"{'host':<{width}}  waiting  in flight  " + ("   delay  " if delays else "")
    text = Text(" ").append(head + "state", style="bold")
    for name, h in zip(names, hosts, strict=True):
        text.append(f"\n {name:<{width}}  {h.waiting:>7,}  {h.in_flight:>9,}  ")
        if delays:
            text.append(f"{h.delay:>6.2f} s  ")
        text.append(h.state, style=_STATE_STYLES.get(h.state, ""))
    return text


class ConsoleLogHandler(logging.Handler):
    """Prints each record through the live display's Console: one line above the display."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record; Text, so markup and emoji codes in messages stay literal."""
        try:
            line = Text(self.format(record), style=_LEVEL_STYLES.get(record.levelno, ""))
            self.console.print(line, soft_wrap=True)  # the terminal wraps: one logical line
        except Exception:
            self.handleError(record)


class Progress:
    """Shows a crawl's progress until cancelled; see the module docstring."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        stream: TextIO,
        *,
        live: bool,
        every: float = 10.0,
    ) -> None:
        self._snapshot = snapshot
        self._stream = stream
        self._every = every
        self._console = Console(file=stream, force_terminal=live, highlight=False)
        # A dumb terminal cannot move the cursor: rich would draw nothing until the end.
        self._live = live and not self._console.is_dumb_terminal
        self._window = Window(round(WINDOW / TICK) + 1 if self._live else 2)

    @property
    def live(self) -> bool:
        """Whether run() draws the live display (False: plain log lines)."""
        return self._live

    def handler(self) -> logging.Handler:
        """The logging handler to install while the crawl runs: never tears the display."""
        if self._live:
            return ConsoleLogHandler(self._console)
        handler = logging.StreamHandler(self._stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return handler

    async def run(self) -> None:
        """Show progress until cancelled (a plain line every `every` s; none if every <= 0)."""
        if self._live:
            await self._run_live()
        elif self._every > 0:
            await self._run_plain()
        else:
            await asyncio.Event().wait()  # nothing to show, but still ends by cancellation

    async def _run_live(self) -> None:
        # Redirect print() only to where the display is: a piped stdout stays a pipe.
        ours = self._stream is sys.stderr
        with Live(
            console=self._console,
            auto_refresh=False,  # no refresh thread: snapshot() runs on the loop only
            redirect_stderr=ours,
            redirect_stdout=ours and sys.stdout.isatty(),
        ) as live:
            ascii_only = self._console.options.ascii_only
            while True:
                snap = self._snapshot()
                est = self._window.push(snap)
                live.update(frame(snap, est, ascii_only=ascii_only), refresh=True)
                await asyncio.sleep(TICK)  # cancelled here: Live's exit keeps the last frame

    async def _run_plain(self) -> None:
        self._window.push(self._snapshot())
        while True:
            await asyncio.sleep(self._every)
            snap = self._snapshot()
            log.info(plain_line(snap, self._window.push(snap)))
