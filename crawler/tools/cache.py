"""An HTTP cache for development: responses in a SQLite file, keyed by request fingerprint.

A crawl with `CACHE=PATH` replays every response the file holds (status, headers, body,
URL) without touching the network, and stores every new one whose status is below 400.
A redirect is stored as it came, with its Location, under the request it answered, so a
replay takes the same hops, each a request of its own. `CACHE_EXPIRE` seconds (0: never)
ages entries out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType

import aiosqlite
from multidict import CIMultiDict, CIMultiDictProxy

from crawler.errors import UsageError
from crawler.http import Request, Response

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    fp BLOB PRIMARY KEY,
    url TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    stored_at REAL NOT NULL
);
"""


class Cache:
    """Responses by request fingerprint, in one SQLite file."""

    def __init__(self, path: Path, expire: float = 0.0) -> None:
        self.path = path
        self.expire = expire
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Cache:
        check_cache_file(self.path)
        self._db = await aiosqlite.connect(self.path)
        try:
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = OFF")  # a cache: losing it is fine
            await self._db.executescript(_SCHEMA)
        except BaseException:
            await self._db.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.commit()
            await self._db.close()
            self._db = None

    async def get(self, request: Request, fp: bytes) -> Response | None:
        """The stored response to a request, or None (not stored, or expired)."""
        assert self._db is not None, "Cache used outside `async with`"
        rows = await self._db.execute_fetchall(
            "SELECT url, status, headers, body, stored_at FROM responses WHERE fp = ?", (fp,)
        )
        if not rows:
            return None
        url, status, headers, body, stored_at = next(iter(rows))
        if self.expire and time.time() - stored_at > self.expire:
            return None
        restored = CIMultiDictProxy(CIMultiDict(json.loads(headers)))
        return Response(url=url, status=status, headers=restored, body=body, request=request)

    async def put(self, fp: bytes, response: Response) -> None:
        """Store a response under its request's fingerprint (the fetcher chooses which)."""
        assert self._db is not None, "Cache used outside `async with`"
        headers = json.dumps(list(response.headers.items()))
        await self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
            (fp, response.url, response.status, headers, response.body, time.time()),
        )
        await self._db.commit()


def check_cache_file(path: Path) -> None:
    """Raise UsageError unless `path` is (or can become) a cache file; never writes."""
    if path.is_dir():
        raise UsageError(f"cache {path}: is a folder")
    if path.exists():
        with path.open("rb") as f:
            header = f.read(16)
        if header and header != b"SQLite format 3\x00":
            raise UsageError(f"cache {path}: not a SQLite file; left unchanged")
    elif not path.parent.is_dir():
        raise UsageError(f"cache {path}: folder {path.parent} does not exist")


def clear_cache(path: Path) -> int:
    """Empty a cache file; the count of responses removed."""
    import sqlite3

    if not path.exists():
        raise UsageError(f"cache {path}: no such file")
    check_cache_file(path)
    try:
        with sqlite3.connect(path) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM responses").fetchone()
            db.execute("DELETE FROM responses")
        with sqlite3.connect(path) as db:
            db.execute("VACUUM")
    except sqlite3.Error:
        raise UsageError(f"cache {path}: not a crawler cache; left unchanged") from None
    return int(count)
