"""Store: the crawl's one SQLite database and its one writer.

Tables: `crawl` (which spider owns the file), `requests` (the frontier: every admitted
request, and once fetched, its page's outcome: done, failed, skipped, or redirected to
the request that is its next hop), `items`. `commit_pages()` is one
transaction for a batch of pages: each page's items, the requests it found and the
mark that it is done commit together, so a crash (even kill -9) loses whole pages,
never half of one, and a resumed crawl stores every item exactly once.
A done page keeps its response's ETag and Last-Modified; a re-crawl (`--refresh`,
storage/refresh.py) queues such pages again, and a refetched page's old items are
replaced, or kept, in the same one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import aiosqlite

from crawler.errors import UsageError
from crawler.http import PageResult, Request
from crawler.stats import Stats

if TYPE_CHECKING:
    from crawler.storage.refresh import Refreshed

QUEUED, DONE, FAILED, SKIPPED, REDIRECTED = 0, 1, 2, 3, 4
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
"""
# Columns added since a table was first created: (table, column, definition). A database
# made by an earlier version gets them when opened (_upgrade).
_ADDED_COLUMNS = [
    ("requests", "redirects", "INTEGER NOT NULL DEFAULT 0"),
    ("items", "type", "TEXT"),
    ("requests", "etag", "TEXT"),
    ("requests", "last_modified", "TEXT"),
    ("requests", "refresh", "INTEGER NOT NULL DEFAULT 0"),
]
_INSERT_REQUEST = """
INSERT OR IGNORE INTO requests (id, fp, url, method, headers, body, meta, callback, errback,
                      priority, depth, dont_filter, parent, redirects)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                    error = ?, finished_at = ?, etag = ?, last_modified = ?
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


class Store:
    """The one writer of a crawl database."""

    def __init__(self, path: Path, spider: str) -> None:
        self.path = path
        self.spider = spider
        self._db: aiosqlite.Connection | None = None
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
            if state == DONE:
                stats.pages_done = count
            elif state == FAILED:
                stats.pages_failed = count
            elif state == REDIRECTED:
                stats.pages_redirected = count
            else:
                stats.pages_skipped = count
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
            " dont_filter, redirects, refresh, etag, last_modified"
            " FROM requests WHERE state = 0 AND id > ? AND id <= ?"
            " ORDER BY id LIMIT ?",
            (after, upto, limit),
        )
        requests = [
            StoredRequest(
                key=r[0], fp=r[1], url=r[2], method=r[3], headers=_loads(r[4]), body=r[5],
                meta=_loads(r[6]), callback=r[7], errback=r[8], priority=r[9], depth=r[10],
                dont_filter=bool(r[11]), redirects=r[12],
            )
            for r in rows
        ]  # fmt: skip
        refreshes = {r[0]: (r[14], r[15]) for r in rows if r[13]}  # key -> etag, last_modified
        if refreshes:  # they go out with their page's validators
            from crawler.storage.refresh import conditional

            requests = conditional(requests, refreshes, self.refreshing)
        return requests, (requests[-1].key if len(requests) == limit else upto)

    async def add_requests(self, requests: Sequence[Request], dropped: Counter[str]) -> set[int]:
        """Store requests that have no page to commit with (the start requests);
        the keys of those that were new."""
        return await self._transaction(
            list(self._request_rows(requests, None)), [], [], dropped, [], None
        )

    async def commit_pages(self, pages: Sequence[PageResult]) -> set[int]:
        """One transaction: every page's items, its new requests, and its done-mark;
        the keys of the requests that were new (the others were seen before)."""
        now = time.time()
        refreshed = None
        if self.refreshing:  # some pages of this batch may be refreshes
            from crawler.storage.refresh import Refreshed

            refreshed = Refreshed.of(pages, self.refreshing, now)
        request_rows: list[RequestRow] = []
        item_rows: list[tuple[int, str, str | None]] = []
        page_rows: list[tuple[Any, ...]] = []
        dropped: Counter[str] = Counter()
        dropped_items: Counter[str] = Counter()
        hops: list[int] = []  # keys of the redirects' next hops
        for page in pages:
            dropped.update(page.dropped)
            key = page.request.key
            request_rows.extend(self._request_rows(page.requests, page.request))
            if page.types is None:
                item_rows.extend((key, _dumps(item), None) for item in page.items)
            else:
                item_rows.extend(
                    (key, _dumps(item), name)
                    for item, name in zip(page.items, page.types, strict=True)
                )
            if page.dropped_items:
                dropped_items.update(reason for _, reason in page.dropped_items)
            if page.error:
                state = SKIPPED if page.skipped else FAILED
            elif page.redirected:
                state = REDIRECTED
                hops.extend(r.key for r in page.requests)
            else:
                state = DONE
            page_rows.append((
                state, page.status, page.url, page.size, page.attempts, page.error, now,
                page.etag, page.last_modified, key,
            ))  # fmt: skip
        if refreshed is not None:
            page_rows = refreshed.usual(page_rows)
        return await self._transaction(
            request_rows, item_rows, page_rows, dropped, hops, dropped_items, refreshed
        )

    async def _transaction(
        self,
        request_rows: list[RequestRow],
        item_rows: list[tuple[int, str, str | None]],
        page_rows: list[tuple[Any, ...]],
        dropped: Counter[str],
        hops: list[int],
        dropped_items: Counter[str] | None,
        refreshed: Refreshed | None = None,
    ) -> set[int]:
        db = self.db
        new: set[int] = set()
        await db.execute("BEGIN IMMEDIATE")
        try:
            if request_rows:
                await db.executemany(_INSERT_REQUEST, request_rows)
                # Keys are handed out in order: those in the range that exist are new.
                keys = await db.execute_fetchall(
                    "SELECT id FROM requests WHERE id BETWEEN ? AND ?",
                    (request_rows[0].id, request_rows[-1].id),
                )
                new = {key for (key,) in keys}
                if len(new) < len(request_rows):
                    dropped = dropped + _duplicates(len(request_rows) - len(new), hops, new)
            if refreshed is not None:  # old items go before the new ones come
                await refreshed.before_items(db)
            if item_rows:
                await db.executemany(
                    "INSERT INTO items (page, data, type) VALUES (?, ?, ?)", item_rows
                )
            if page_rows:
                await db.executemany(_FINISH_PAGE, page_rows)
            if refreshed is not None:
                await refreshed.after_pages(db)
            if dropped:
                await db.executemany(_COUNT_DROPPED, dropped.items())
            if dropped_items:
                await db.executemany(_COUNT_DROPPED_ITEMS, dropped_items.items())
            await db.execute("COMMIT")
        except BaseException:
            # A cancelled aiosqlite call still runs: roll back whatever it left open.
            await db.rollback()
            raise
        if refreshed is not None:
            self.refreshing -= refreshed.keys
            self.removed_items += refreshed.removed
        return new

    @staticmethod
    def _request_rows(requests: Iterable[Request], parent: Request | None) -> Iterator[RequestRow]:
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
            ))  # fmt: skip


def _duplicates(count: int, hops: list[int], new: set[int]) -> Counter[str]:
    """The drop reasons of `count` requests the unique index refused: a redirect's next
    hop among them is counted as a redirect to a page already crawled."""
    lost_hops = sum(1 for key in hops if key not in new)
    counts = Counter({"redirect to a page already crawled": lost_hops})
    counts["duplicate"] = count - lost_hops
    return +counts  # without the zero counts


def _name(callback: Any) -> str | None:
    return None if callback is None else str(callback.__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


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
        if state == QUEUED:
            summary.pages_queued = count
        elif state == DONE:
            summary.pages_done = count
        elif state == FAILED:
            summary.pages_failed = count
        elif state == REDIRECTED:
            summary.pages_redirected = count
        else:
            summary.pages_skipped = count
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
