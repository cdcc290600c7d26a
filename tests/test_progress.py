"""Progress: the live display on a real pseudo-terminal, plain lines into a file-like stream."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pty
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import pytest

from crawler.progress import Progress, Window
from crawler.stats import HostState, Snapshot

HOSTS = (
    HostState("127.0.0.1:8000", 4812, 8, "capped"),
    HostState("127.0.0.2:8001", 310, 3, "held by Retry-After"),
)
LOG_MESSAGE = "host 127.0.0.2:8001 answered 503; retrying in 2 s [not markup]"
TOKENS = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b|\r|\n|[^\x1b\r\n]+")


@dataclass
class FakeCrawl:
    """Counters that advance on every snapshot: 50 pages per 0.25 s, so exactly 200 pages/s."""

    max_pages: int = 0
    queue_step: int = -20
    calls: int = 0

    def snapshot(self) -> Snapshot:
        self.calls += 1
        done = 50 * self.calls
        return Snapshot(
            elapsed=0.25 * self.calls,
            pages_done=done - self.calls,  # done + failed: 50 pages a call
            pages_failed=self.calls,
            pages_skipped=0,
            pages_redirected=0,
            queued=5000 + self.queue_step * self.calls,
            in_flight=64,
            items=2 * done,
            bytes=21_000 * done,
            retries=self.calls // 2,
            max_pages=self.max_pages,
            hosts=HOSTS,
        )


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: text, CR, LF, cursor up, erase line; colours ignored."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for m in TOKENS.finditer(raw):
        token, final = m.group(), m.group(2)
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            rows.extend([] for _ in range(row + 1 - len(rows)))
        elif final == "A":
            row -= int(m.group(1) or 1)
        elif final == "K":
            rows[row] = []
        elif final in ("m", "h", "l"):  # colours, cursor hidden or shown
            continue
        else:
            assert not token.startswith("\x1b"), f"unexpected escape {token!r}"
            line = rows[row]
            line.extend(" " * (col - len(line)))
            line[col : col + len(token)] = token
            col += len(token)
    return ["".join(line).rstrip() for line in rows]


def read_available(fd: int, into: bytearray) -> None:
    """Append what the pty's master side has to read, without blocking."""
    try:
        while chunk := os.read(fd, 65536):
            into += chunk
    except BlockingIOError:
        pass


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


async def run_for(progress: Progress, seconds: float) -> None:
    """Run `progress` for a while, then cancel it as the engine does at the end of a crawl."""
    task = asyncio.create_task(progress.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TextIO, int]]:
    """A pseudo-terminal 100 columns wide: the slave side as a stream, the master's fd."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "100")
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    with open(slave, "w", encoding="utf-8") as stream:
        yield stream, master
    os.close(master)


async def test_live_display_on_a_terminal_shows_counters_rate_eta_and_hosts(
    terminal: tuple[TextIO, int], root_logging: logging.Logger
) -> None:
    stream, master = terminal
    out = bytearray()
    loop = asyncio.get_running_loop()
    loop.add_reader(master, read_available, master, out)  # a full pty would block the writes
    try:
        progress = Progress(FakeCrawl(max_pages=10_000).snapshot, stream, live=True)
        root_logging.handlers[:] = [progress.handler()]
        task = asyncio.create_task(run_for(progress, 1.1))
        await asyncio.sleep(0.6)
        logging.getLogger("crawler.fetcher").warning(LOG_MESSAGE)
        await task
        read_available(master, out)
    finally:
        loop.remove_reader(master)

    raw = out.decode()
    assert raw.count("pages/s") >= 4  # redrawn about 4 times a second
    rows = screen(raw)
    logged = [
        i for i, r in enumerate(rows) if r.endswith(f"WARNING crawler.fetcher: {LOG_MESSAGE}")
    ]
    assert len(logged) == 1, rows
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING", rows[logged[0]])
    shown = "\n".join(rows[logged[0] + 1 :])  # the display's last frame, below the log line
    assert re.search(r"[\d,]+ done {3}4,\d{3} queued {3}64 in flight {3}\d+ failed", shown)
    assert re.search(
        r"200 pages/s {3}[\d.]+ MB received {3}0:00:0\d elapsed {3}ETA 0:00:4\d", shown
    )
    assert "% of MAX_PAGES 10,000" in shown
    assert re.search(r"127\.0\.0\.1:8000 +4,812 +8 +capped", shown)
    assert re.search(r"127\.0\.0\.2:8001 +310 +3 +held by Retry-After", shown)


async def test_plain_lines_without_escape_codes_when_not_a_terminal(
    root_logging: logging.Logger,
) -> None:
    stream = io.StringIO()
    progress = Progress(FakeCrawl().snapshot, stream, live=False, every=0.2)
    root_logging.handlers[:] = [progress.handler()]
    root_logging.setLevel(logging.INFO)
    await run_for(progress, 0.7)

    text = stream.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) >= 2
    line = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO crawler\.progress: "
        r"[\d,]+ pages \(200/s\), [\d,]+ done, \d+ failed, (\d+ retries, )?"
        r"4,\d{3} queued, 64 in flight, "
        r"[\d,]+ items, [\d.]+ MB, 0:00:0\d elapsed, ETA 0:00:\d\d$"  # the queue shrinks: bounded
    )
    assert all(line.match(x) for x in lines), lines


async def test_no_eta_while_the_queue_grows_and_max_pages_is_unset(
    root_logging: logging.Logger,
) -> None:
    stream = io.StringIO()
    progress = Progress(FakeCrawl(queue_step=+20).snapshot, stream, live=False, every=0.05)
    root_logging.handlers[:] = [progress.handler()]
    root_logging.setLevel(logging.INFO)
    await run_for(progress, 0.3)

    lines = stream.getvalue().splitlines()
    assert lines
    assert not any("ETA" in x for x in lines), lines


def test_eta_needs_a_bound_max_pages_or_a_queue_that_stopped_growing() -> None:
    crawl = FakeCrawl(max_pages=1000)
    window = Window(3)
    assert window.push(crawl.snapshot()).eta is None  # one snapshot: no rate yet
    assert window.push(crawl.snapshot()).eta == pytest.approx(900 / 200)  # MAX_PAGES bounds
    # The window is full and the queue shrank: 4,940 queued + 64 in flight bound the work too,
    # but MAX_PAGES bounds it more.
    assert window.push(crawl.snapshot()).eta == pytest.approx(850 / 200)

    unbounded = FakeCrawl()
    window = Window(3)
    assert [window.push(unbounded.snapshot()).eta for _ in range(2)] == [None, None]
    assert window.push(unbounded.snapshot()).eta == pytest.approx((4940 + 64) / 200)


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    progress = Progress(FakeCrawl().snapshot, io.StringIO(), live=True)
    assert not progress.live
    assert type(progress.handler()) is logging.StreamHandler
