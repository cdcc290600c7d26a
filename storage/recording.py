"""What a crawl records for the dashboard (`crawler serve`), beside its pages: per-minute
and per-host counts and a histogram of response times, upserted in the pages' own
transaction (`PageStats`, a few rows per batch, none per link), each page's fetch time,
headers and link range in its done-mark, and the frontier's live per-host state,
rewritten every few seconds (`write_live`). A database made before these gets them when a
crawl opens it (`add_schema`), its existing pages counted in once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import aiosqlite

from crawler.http import PageResult
from crawler.storage.states import DONE, FAILED, REDIRECTED, SKIPPED
from crawler.urls import host_of

# Added for the dashboard (crawler serve). Every write is O(1) per page, never per link:
# the partial indexes gain an entry only when a page finishes or fails.
PAGE_COLUMNS = {
    "elapsed": "REAL",  # seconds the fetch took, retries included
    "response_headers": "TEXT",  # one `Name: value` line each (header_block)
    "error_text": "TEXT",  # the last error's message
    "links_from": "INTEGER",  # the keys of the requests the page queued lie in
    "links_to": "INTEGER",  # [links_from, links_to]
}
_DASHBOARD_SCHEMA = """
CREATE INDEX IF NOT EXISTS requests_errors ON requests (error, id) WHERE error IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_page ON items (page);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER PRIMARY KEY,
    pages INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL,
    items INTEGER NOT NULL, bytes INTEGER NOT NULL, retries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    done INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS host_times (
    host TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (host, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live (
    host TEXT PRIMARY KEY, waiting INTEGER NOT NULL, in_flight INTEGER NOT NULL,
    state TEXT NOT NULL
);
"""
# A fresh table over pages stored before it existed: filled once, from the requests.
_HOST_SQL = (
    "lower(substr(substr(url, instr(url, '://') + 3), 1,"
    " instr(substr(url, instr(url, '://') + 3) || '/', '/') - 1))"
)
_BACKFILL = {
    "minutes": f"""
INSERT INTO minutes SELECT CAST(finished_at / 60 AS INTEGER),
    COUNT(*) FILTER (WHERE state = {DONE}), COUNT(*) FILTER (WHERE state = {FAILED}),
    COUNT(*) FILTER (WHERE state = {SKIPPED}), 0, COALESCE(SUM(size), 0),
    COALESCE(SUM(MAX(attempts - 1, 0)), 0)
FROM requests WHERE state != 0 GROUP BY 1;
UPDATE minutes SET items = items + (SELECT COUNT(*) FROM items)
WHERE minute = (SELECT MAX(minute) FROM minutes);
""",
    "hosts": f"""
INSERT INTO hosts SELECT {_HOST_SQL},
    COUNT(*) FILTER (WHERE state = {DONE}), COUNT(*) FILTER (WHERE state = {FAILED}),
    COUNT(*) FILTER (WHERE state = {SKIPPED}), COALESCE(SUM(size), 0)
FROM requests WHERE state != 0 GROUP BY 1;
""",
}
_COUNT_MINUTE = """
INSERT INTO minutes (minute, pages, failed, skipped, items, bytes, retries)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (minute) DO UPDATE SET pages = pages + excluded.pages,
    failed = failed + excluded.failed, skipped = skipped + excluded.skipped,
    items = items + excluded.items, bytes = bytes + excluded.bytes,
    retries = retries + excluded.retries
"""
_COUNT_HOST = """
INSERT INTO hosts (host, done, failed, skipped, bytes) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (host) DO UPDATE SET done = done + excluded.done,
    failed = failed + excluded.failed, skipped = skipped + excluded.skipped,
    bytes = bytes + excluded.bytes
"""
_COUNT_TIME = """
INSERT INTO host_times (host, bucket, count) VALUES (?, ?, ?)
ON CONFLICT (host, bucket) DO UPDATE SET count = count + excluded.count
"""
TIME_BUCKETS = 8  # response-time histogram buckets per doubling (each ~9% wide)


async def add_schema(db: aiosqlite.Connection) -> None:
    """The columns, tables and indexes the dashboard reads; a database made before
    them gets them here, its existing pages counted once into the new tables."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(requests)")}
        for name, kind in PAGE_COLUMNS.items():
            if name not in columns:
                await db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
        tables = {
            str(row[0]) for row in await db.execute_fetchall("SELECT name FROM sqlite_master")
        }
        for statement in _DASHBOARD_SCHEMA.split(";"):
            if statement.strip():
                await db.execute(statement)
        for table, backfill in _BACKFILL.items():
            if table not in tables:
                for statement in backfill.split(";"):
                    if statement.strip():
                        await db.execute(statement)
        await db.execute("COMMIT")
    except BaseException:
        await db.rollback()
        raise


async def write_live(
    db: aiosqlite.Connection, hosts: Sequence[tuple[str, int, int, str]], facts: dict[str, str]
) -> None:
    """Replace the live per-host state (host, waiting, in flight, state) and set some
    `crawl` keys (run state, heartbeat); one short transaction."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("DELETE FROM live")
        await db.executemany("INSERT INTO live VALUES (?, ?, ?, ?)", hosts)
        await db.executemany(
            "INSERT OR REPLACE INTO crawl (key, value) VALUES (?, ?)", facts.items()
        )
        await db.execute("COMMIT")
    except BaseException:
        await db.rollback()
        raise


class PageStats:
    """A batch's rows for the dashboard's tables: a few per page, none per link."""

    def __init__(self, now: float) -> None:
        self.minute = int(now // 60)
        self.totals = [0, 0, 0, 0, 0, 0]  # pages, failed, skipped, items, bytes, retries
        self.hosts: dict[str, list[int]] = {}  # host -> done, failed, skipped, bytes
        self.times: Counter[tuple[str, int]] = Counter()

    def add(self, page: PageResult, state: int) -> None:
        """Count one page, stored in `state`."""
        host = host_of(page.request.url)
        counts = self.hosts.get(host)
        if counts is None:
            counts = self.hosts[host] = [0, 0, 0, 0]
        if state != REDIRECTED:  # done, failed, skipped: 1, 2, 3
            counts[state - 1] += 1
        counts[3] += page.size
        totals = self.totals
        totals[0] += state == DONE
        totals[1] += state == FAILED
        totals[2] += state == SKIPPED
        totals[3] += len(page.items)
        totals[4] += page.size
        totals[5] += max(page.attempts - 1, 0)
        if page.elapsed is not None:
            self.times[host, time_bucket(page.elapsed)] += 1

    async def write(self, db: aiosqlite.Connection) -> None:
        """Upsert the counts: one row for the minute, one per host and time bucket."""
        await db.execute(_COUNT_MINUTE, (self.minute, *self.totals))
        await db.executemany(_COUNT_HOST, [(host, *c) for host, c in self.hosts.items()])
        await db.executemany(_COUNT_TIME, [(h, b, n) for (h, b), n in self.times.items()])


def time_bucket(seconds: float) -> int:
    """The histogram bucket of a response time: TIME_BUCKETS per doubling from 1 ms."""
    return max(0, math.ceil(math.log2(max(seconds, 0.001) * 1000) * TIME_BUCKETS))


def bucket_seconds(bucket: int) -> float:
    """The upper bound of a histogram bucket, in seconds."""
    return float(2 ** (bucket / TIME_BUCKETS) / 1000)


def header_block(headers: Mapping[str, str]) -> str:
    """A response's headers as stored: one `Name: value` line each, repeats kept."""
    return "\r\n".join([f"{name}: {value}" for name, value in headers.items()])


def header_pairs(block: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a stored header block."""
    pairs = []
    for line in block.split("\r\n"):
        name, _, value = line.partition(": ")
        pairs.append((name, value))
    return pairs
