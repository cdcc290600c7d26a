"""Store: the crawl's one SQLite database and its one writer.

Tables: `crawl` (which spider owns the file), `requests` (the frontier: every admitted
request, and once fetched, its page's outcome: done, failed, skipped, or redirected to
the request that is its next hop), `items`, `dropped` and `items_dropped` (links and
items not kept, by reason); for the dashboard, `minutes` (pages, failures, items, bytes
per minute), `hosts` and `host_times` (per-host counts and a histogram of response
times), all upserted in the pages' own transaction, and `live` (the frontier's per-host
state, rewritten every few seconds); `cookies` (the crawl's sessions: each cookie a
page's answers set, saved with that page). `commit_pages()` is one transaction for a
batch of pages: each page's items, the requests it found and the mark that it is done
commit together, so a crash (even kill -9) loses whole pages, never half of one, and a
resumed crawl stores every item exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import aiosqlite

from crawler.cookies import CookieRow
from crawler.errors import UsageError
from crawler.http import PageResult, Request
from crawler.stats import Stats
from crawler.storage.recording import PageStats, add_schema, header_block, write_live
from crawler.storage.states import COUNTED_AS, DONE, FAILED, REDIRECTED, SKIPPED

if TYPE_CHECKING:
    from crawler.storage.refresh import Refreshed

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crawl (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    fp BLOB NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT,
    body BLOB,
    meta TEXT,
    callback TEXT,
    errback TEXT,
    priority INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    dont_filter INTEGER NOT NULL,
    parent INTEGER,
    state INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    final_url TEXT,
    size INTEGER,
    attempts INTEGER,
    error TEXT,
    finished_at REAL,
    redirects INTEGER NOT NULL DEFAULT 0,
    cookies TEXT,
    etag TEXT,
    last_modified TEXT,
    refresh INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_queued ON requests (id) WHERE state = 0;
CREATE UNIQUE INDEX IF NOT EXISTS requests_seen ON requests (fp) WHERE dont_filter = 0;
CREATE TABLE IF NOT EXISTS dropped (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    page INTEGER NOT NULL REFERENCES requests (id),
    data TEXT NOT NULL,
    type TEXT
);
CREATE TABLE IF NOT EXISTS items_dropped (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cookies (
    jar TEXT NOT NULL,
    domain TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    host_only INTEGER NOT NULL,
    secure INTEGER NOT NULL,
    expires REAL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (jar, domain, path, name)
);
"""
# Columns added since a table was first created: (table, column, definition). A database
# made by an earlier version gets them when opened (_upgrade).
_ADDED_COLUMNS = [
    ("requests", "redirects", "INTEGER NOT NULL DEFAULT 0"),
    ("items", "type", "TEXT"),
    ("requests", "cookies", "TEXT"),
    ("requests", "etag", "TEXT"),
    ("requests", "last_modified", "TEXT"),
    ("requests", "refresh", "INTEGER NOT NULL DEFAULT 0"),
]

_INSERT_REQUEST = """
INSERT OR IGNORE INTO requests (id, fp, url, method, headers, body, meta, callback, errback,
                      priority, depth, dont_filter, parent, redirects, cookies)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A cookie set by a page: a later one (by seq) replaces it, an earlier one does not (pages
# of one batch may commit in another order than their answers came).
_SAVE_COOKIE = """
INSERT INTO cookies (jar, domain, path, name, value, host_only, secure, expires, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (jar, domain, path, name) DO UPDATE SET
    value = excluded.value, host_only = excluded.host_only, secure = excluded.secure,
    expires = excluded.expires, seq = excluded.seq
WHERE excluded.seq > cookies.seq
"""
_COUNT_DROPPED = """
INSERT INTO dropped (reason, count) VALUES (?, ?)
ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count
"""
_COUNT_DROPPED_ITEMS = """
INSERT INTO items_dropped (reason, count) VALUES (?, ?)
ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count
"""
_FINISH_PAGE = """
UPDATE requests SET state = ?, status = ?, final_url = ?, size = ?, attempts = ?,
                    error = ?, finished_at = ?, elapsed = ?, response_headers = ?,
                    error_text = ?, links_from = ?, links_to = ?, etag = ?, last_modified = ?
WHERE id = ?
"""


class RequestRow(NamedTuple):
    """A request as written to the `requests` table (callbacks by name, JSON encoded)."""

    id: int
    fp: bytes
    url: str
    method: str
    headers: str | None
    body: bytes | None
    meta: str | None
    callback: str | None
    errback: str | None
    priority: int
    depth: int
    dont_filter: int
    parent: int | None
    redirects: int
    cookies: str | None


@dataclass(frozen=True, slots=True)
class Loaded:
    """Where a stored crawl stands, for the frontier to take up."""

    next_key: int  # the next free request key
    pages_started: int  # requests handed out and committed, over every run
    queued: int  # requests waiting to be fetched


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A queued request as stored: callbacks by name, meta and headers decoded."""

    key: int
    fp: bytes
    url: str
    method: str
    headers: dict[str, str] | None
    body: bytes | None
    meta: dict[str, Any] | None
    callback: str | None
    errback: str | None
    priority: int
    depth: int
    dont_filter: bool
    redirects: int
    cookies: dict[str, str] | list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Summary:
    """The state of a crawl, as `crawler status` shows it."""

    spider: str = ""
    pages_done: int = 0
    pages_failed: int = 0
    pages_skipped: int = 0
    pages_redirected: int = 0
    pages_queued: int = 0
    items: int = 0
    items_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    retries: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    status_codes: dict[int, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # links not queued, by reason
    elapsed: float = 0.0  # of the run that returned this summary
    pages_this_run: int = 0
    not_modified: int = 0  # pages the last --refresh found unchanged (answered 304)

    @property
    def finished(self) -> bool:
        """Whether nothing is left to fetch."""
        return self.pages_queued == 0

    @classmethod
    def of(cls, spider: str, stats: Stats) -> Summary:
        """A process's running totals as a report (a Redis worker has no database)."""
        return cls(
            spider=spider, pages_done=stats.pages_done, pages_failed=stats.pages_failed,
            pages_skipped=stats.pages_skipped, pages_redirected=stats.pages_redirected,
            items=stats.items, items_dropped=dict(stats.items_dropped),
        )  # fmt: skip


class Store:
    """The one writer of a crawl database."""

    def __init__(self, path: Path, spider: str) -> None:
        self.path = path
        self.spider = spider
        self._db: aiosqlite.Connection | None = None
        # Live-state writes come from another task than the commits: one transaction at a time.
        self._lock = asyncio.Lock()
        self.refreshing: set[int] = set()  # keys of refreshes loaded and not yet committed
        self.removed_items = 0  # old items of refreshed pages deleted, in this run

    async def __aenter__(self) -> Store:
        check_database(self.path, must_exist=False)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a process crash loses nothing committed.
            await self._db.execute("PRAGMA synchronous = NORMAL")
            await self._db.executescript(_SCHEMA)
            await self._upgrade()
            await self._claim()
            await add_schema(self._db)
        except BaseException:
            await self._db.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection."""
        assert self._db is not None, "Store used outside `async with`"
        return self._db

    async def _upgrade(self) -> None:
        """Bring a database made by an earlier version up to this schema."""
        for table, column, definition in _ADDED_COLUMNS:
            rows = await self.db.execute_fetchall(f"PRAGMA table_info({table})")
            if column not in {row[1] for row in rows}:
                await self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    async def note(self, key: str, value: str) -> None:
        """Record a fact about the crawl (its `crawl` table), e.g. when it was closed."""
        await self.db.execute(
            "INSERT OR REPLACE INTO crawl (key, value) VALUES (?, ?)", (key, value)
        )

    async def noted(self, key: str) -> str | None:
        """A fact recorded with `note`, or None."""
        rows = await self.db.execute_fetchall("SELECT value FROM crawl WHERE key = ?", (key,))
        return next((str(row[0]) for row in rows), None)

    async def _claim(self) -> None:
        rows = await self.db.execute_fetchall("SELECT value FROM crawl WHERE key = 'spider'")
        owner = next((str(row[0]) for row in rows), None)
        if owner is None:
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.executemany(
                "INSERT INTO crawl (key, value) VALUES (?, ?)",
                [
                    ("spider", self.spider),
                    ("schema", SCHEMA_VERSION),
                    ("created", str(time.time())),
                ],
            )
            await self.db.execute("COMMIT")
        elif owner != self.spider:
            raise UsageError(
                f"{self.path} holds a crawl of spider {owner!r}, not {self.spider!r}; "
                f"use another --db, or delete the file to start fresh"
            )

    async def record_live(
        self, hosts: Sequence[tuple[str, int, int, str]], facts: dict[str, str]
    ) -> None:
        """The frontier's live per-host state and the run's facts, for the dashboard."""
        async with self._lock:  # the commits share the connection
            await write_live(self.db, hosts, facts)

    async def load(self) -> Loaded:
        """Where the stored crawl stands: its next free key, pages started, requests queued."""
        (max_key, started, queued), *_ = await self.db.execute_fetchall(
            "SELECT COALESCE(MAX(id), 0), COUNT(*) FILTER (WHERE state != 0),"
            " COUNT(*) FILTER (WHERE state = 0) FROM requests"
        )
        return Loaded(int(max_key) + 1, int(started), int(queued))

    async def stats(self) -> Stats:
        """The crawl's totals over every run so far (pages by outcome, items, drops)."""
        stats = Stats()
        for state, count in await self.db.execute_fetchall(
            "SELECT state, COUNT(*) FROM requests WHERE state != 0 GROUP BY state"
        ):
            setattr(stats, COUNTED_AS[state], count)
        ((stats.items,),) = await self.db.execute_fetchall("SELECT COUNT(*) FROM items")
        for reason, count in await self.db.execute_fetchall(
            "SELECT reason, count FROM items_dropped"
        ):
            stats.items_dropped[reason] = count
        return stats

    async def queued(self, after: int, upto: int, limit: int) -> tuple[list[StoredRequest], int]:
        """Queued requests with keys in (after, upto], oldest first, at most `limit`;
        and the key up to which every queued request was read."""
        rows = await self.db.execute_fetchall(
            "SELECT id, fp, url, method, headers, body, meta, callback, errback, priority, depth,"
            " dont_filter, redirects, cookies, refresh, etag, last_modified"
            " FROM requests WHERE state = 0 AND id > ? AND id <= ?"
            " ORDER BY id LIMIT ?",
            (after, upto, limit),
        )
        requests = [
            StoredRequest(
                key=r[0], fp=r[1], url=r[2], method=r[3], headers=_loads(r[4]), body=r[5],
                meta=_loads(r[6]), callback=r[7], errback=r[8], priority=r[9], depth=r[10],
                dont_filter=bool(r[11]), redirects=r[12], cookies=_loads(r[13]),
            )
            for r in rows
        ]  # fmt: skip
        refreshes = {r[0]: (r[15], r[16]) for r in rows if r[14]}  # key -> etag, last_modified
        if refreshes:  # they go out with their page's validators
            from crawler.storage.refresh import conditional

            requests = conditional(requests, refreshes, self.refreshing)
        return requests, (requests[-1].key if len(requests) == limit else upto)

    async def add_requests(self, requests: Sequence[Request], dropped: Counter[str]) -> set[int]:
        """Store requests that have no page to commit with (the start requests);
        the keys of those that were new."""
        batch = Batch(time.time(), list(self.request_rows(requests, None)), dropped=dropped)
        return await self._transaction(batch)

    async def commit_pages(self, pages: Sequence[PageResult]) -> set[int]:
        """One transaction: every page's items, its new requests, and its done-mark;
        the keys of the requests that were new (the others were seen before)."""
        now = time.time()
        batch = Batch(now, stats=PageStats(now))
        if self.refreshing:  # some pages of this batch may be refreshes
            from crawler.storage.refresh import Refreshed

            batch.refreshed = Refreshed.of(pages, self.refreshing, now)
        for page in pages:
            batch.add(page, self.request_rows(page.requests, page.request))
        if batch.refreshed is not None:
            batch.page_rows = batch.refreshed.usual(batch.page_rows)
        return await self._transaction(batch)

    async def _transaction(self, batch: Batch) -> set[int]:
        async with self._lock:  # record_live() shares the connection
            new = await self._write(batch)
        if batch.refreshed is not None:
            self.refreshing -= batch.refreshed.keys
            self.removed_items += batch.refreshed.removed
        return new

    async def _write(self, batch: Batch) -> set[int]:
        db = self.db
        new: set[int] = set()
        request_rows, dropped = batch.request_rows, batch.dropped
        await db.execute("BEGIN IMMEDIATE")
        try:
            if request_rows:
                new = await insert_requests(db, request_rows)
                if len(new) < len(request_rows):
                    lost = _duplicates(len(request_rows) - len(new), batch.hops, new)
                    dropped = dropped + lost
            await write_pages(db, batch, dropped)
            await db.execute("COMMIT")
        except BaseException:
            # A cancelled aiosqlite call still runs: roll back whatever it left open.
            await db.rollback()
            raise
        return new

    @staticmethod
    def request_rows(requests: Iterable[Request], parent: Request | None) -> Iterator[RequestRow]:
        parent_key = parent.key if parent is not None else None
        row = RequestRow._make  # the class call costs twice as much, once per new link
        for r in requests:
            yield row((
                r.key, r.fp, r.url, r.method,
                _dumps(dict(r.headers)) if r.headers else None,
                r.body,
                _dumps(dict(r.meta)) if r.meta else None,
                _name(r.callback), _name(r.errback),
                r.priority, r.depth, int(r.dont_filter), parent_key, r.redirects,
                _dumps(_cookies(r.cookies)) if r.cookies else None,
            ))  # fmt: skip

    async def cookies(self) -> list[CookieRow]:
        """The saved cookies of every session, in the order they were set."""
        rows = await self.db.execute_fetchall(
            "SELECT jar, domain, path, name, value, host_only, secure, expires, seq"
            " FROM cookies ORDER BY seq"
        )
        return [CookieRow(*row) for row in rows]


async def insert_requests(db: aiosqlite.Connection, rows: Sequence[RequestRow]) -> set[int]:
    """Insert request rows keyed in order from keys free when the transaction began;
    the keys of those that went in (the unique index ignored the others)."""
    await db.executemany(_INSERT_REQUEST, rows)
    # Keys are handed out in order: those in the range that exist are new.
    keys = await db.execute_fetchall(
        "SELECT id FROM requests WHERE id BETWEEN ? AND ?", (rows[0].id, rows[-1].id)
    )
    return {key for (key,) in keys}


async def write_pages(db: aiosqlite.Connection, batch: Batch, dropped: Counter[str]) -> None:
    """A batch's rows after its requests: items, done-marks, drops (links `dropped`,
    items), the dashboard's counts and cookies; inside the caller's transaction."""
    refreshed = batch.refreshed
    if refreshed is not None:  # old items go before the new ones come
        await refreshed.before_items(db)
    if batch.item_rows:
        await db.executemany(
            "INSERT INTO items (page, data, type) VALUES (?, ?, ?)", batch.item_rows
        )
    if batch.page_rows:
        await db.executemany(_FINISH_PAGE, batch.page_rows)
    if refreshed is not None:
        await refreshed.after_pages(db)
    if dropped:
        await db.executemany(_COUNT_DROPPED, dropped.items())
    if batch.dropped_items:
        await db.executemany(_COUNT_DROPPED_ITEMS, batch.dropped_items.items())
    if batch.stats is not None:
        await batch.stats.write(db)
    if batch.cookie_rows:
        await db.executemany(_SAVE_COOKIE, batch.cookie_rows)


def _duplicates(count: int, hops: list[int], new: set[int]) -> Counter[str]:
    """The drop reasons of `count` requests the unique index refused: a redirect's next
    hop among them is counted as a redirect to a page already crawled."""
    lost_hops = sum(1 for key in hops if key not in new)
    counts = Counter({"redirect to a page already crawled": lost_hops})
    counts["duplicate"] = count - lost_hops
    return +counts  # without the zero counts


@dataclass(slots=True)
class Batch:
    """The rows one transaction writes: pages with their items, links and counts."""

    now: float
    request_rows: list[RequestRow] = field(default_factory=list)
    item_rows: list[tuple[int, str, str | None]] = field(default_factory=list)
    page_rows: list[tuple[Any, ...]] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # links not queued, by reason
    dropped_items: Counter[str] = field(default_factory=Counter)
    hops: list[int] = field(default_factory=list)  # keys of the redirects' next hops
    cookie_rows: list[CookieRow] = field(default_factory=list)
    stats: PageStats | None = None  # the dashboard's counts
    refreshed: Refreshed | None = None  # what a re-crawl's pages do beyond the usual

    def add(self, page: PageResult, request_rows: Iterable[RequestRow]) -> None:
        """One page: its new requests, items, drops, cookies and done-mark."""
        self.dropped.update(page.dropped)
        if page.cookies:
            self.cookie_rows.extend(page.cookies)
        key = page.request.key
        self.request_rows.extend(request_rows)
        if page.types is None:
            self.item_rows.extend((key, _dumps(item), None) for item in page.items)
        else:
            self.item_rows.extend(
                (key, _dumps(item), name) for item, name in zip(page.items, page.types, strict=True)
            )
        if page.dropped_items:
            self.dropped_items.update(reason for _, reason in page.dropped_items)
        if page.error:
            state = SKIPPED if page.skipped else FAILED
        elif page.redirected:
            state = REDIRECTED
            self.hops.extend(r.key for r in page.requests)
        else:
            state = DONE
        if self.stats is not None:
            self.stats.add(page, state)
        links = page.requests  # the first and last key bound them: a key range read
        self.page_rows.append((
            state, page.status, page.url, page.size, page.attempts, page.error, self.now,
            page.elapsed, header_block(page.headers) if page.headers is not None else None,
            page.error_text, links[0].key if links else None,
            links[-1].key if links else None, page.etag, page.last_modified, key,
        ))  # fmt: skip


def _cookies(cookies: Any) -> Any:
    """Request.cookies as JSON takes them: a dict, or Scrapy's list of dicts."""
    return [dict(c) for c in cookies] if isinstance(cookies, list) else dict(cookies)


def _name(callback: Any) -> str | None:
    return None if callback is None else str(callback.__name__)


# One encoder for every row: json.dumps with arguments builds a new one per call.
_dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def check_database(path: Path, *, must_exist: bool) -> None:
    """Raise UsageError unless `path` is (or can become) a crawl database; never writes."""
    if not path.exists():
        if must_exist:
            raise UsageError(f"{path}: no such database")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"{path}: folder {parent} does not exist")
        if not _writable(parent):
            raise UsageError(f"{path}: folder {parent} is not writable")
        return
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a database")
    try:
        with path.open("rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    if header and header != b"SQLite format 3\x00":
        raise UsageError(f"{path}: not a SQLite database; left unchanged")
    if not must_exist and not _writable(path):
        raise UsageError(f"{path}: database is not writable")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a crawl database, or UsageError."""
    check_database(path, must_exist=True)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT value FROM crawl WHERE key = 'spider'").fetchone()[0]
    except (sqlite3.Error, TypeError):
        raise UsageError(f"{path}: not a crawl database") from None
    return db


def read_summary(db: sqlite3.Connection) -> Summary:
    """What a crawl database holds, counted."""
    summary = Summary(
        spider=db.execute("SELECT value FROM crawl WHERE key = 'spider'").fetchone()[0]
    )
    for state, count, retries, size in db.execute(
        "SELECT state, COUNT(*), COALESCE(SUM(MAX(attempts - 1, 0)), 0), COALESCE(SUM(size), 0)"
        " FROM requests GROUP BY state"
    ):
        summary.retries += retries
        summary.bytes += size
        setattr(summary, COUNTED_AS[state], count)
    summary.items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    summary.errors = dict(
        db.execute(
            "SELECT error, COUNT(*) FROM requests WHERE error IS NOT NULL"
            " GROUP BY error ORDER BY COUNT(*) DESC, error"
        ).fetchall()
    )
    summary.dropped = dict(
        db.execute("SELECT reason, count FROM dropped ORDER BY count DESC, reason").fetchall()
    )
    try:
        summary.items_dropped = dict(
            db.execute(
                "SELECT reason, count FROM items_dropped ORDER BY count DESC, reason"
            ).fetchall()
        )
    except sqlite3.OperationalError:  # a database made before items could be dropped
        summary.items_dropped = {}
    try:
        summary.not_modified = db.execute(
            "SELECT COUNT(*) FROM requests WHERE refresh = 2"  # refresh.NOT_MODIFIED
        ).fetchone()[0]
    except sqlite3.OperationalError:  # a database made before --refresh
        summary.not_modified = 0
    summary.status_codes = dict(
        db.execute(
            "SELECT status, COUNT(*) FROM requests WHERE status IS NOT NULL"
            " GROUP BY status ORDER BY status"
        ).fetchall()
    )
    return summary


def iter_items(db: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """Every stored item, in the order they were stored."""
    for (data,) in db.execute("SELECT data FROM items ORDER BY id"):
        yield json.loads(data)
