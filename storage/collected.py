"""The collector's commit: pages fetched and parsed by workers, stored exactly once.

In the distributed mode the frontier lives in Redis and workers send each page's result
to one collector (crawler/results.py), which stores it here. Results are delivered at
least once: a collector that stops between its commit and its acknowledgement reads the
same results again. Each page's request row carries its fingerprint (a dont_filter
request's is a random id, stored with dont_filter = 0), so the unique index
`requests_seen` refuses a page stored before, or repeated in the batch, and that page's
items, marks and counts are left out with it. The links live in Redis: no link rows,
no parent keys, no link range.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiosqlite

from crawler.http import PageResult, Request
from crawler.storage.recording import PageStats
from crawler.storage.sqlite import Batch, Store, insert_requests, write_pages


async def commit_collected(store: Store, pages: Sequence[PageResult]) -> int:
    """One transaction: each page not stored before, with its request row, items,
    done-mark, drops and dashboard counts; the number of pages skipped (stored by an
    earlier commit, or repeated in `pages`)."""
    if not pages:
        return 0
    async with store._lock:  # record_live() shares the connection
        db = store.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            kept = await _insert_requests(db, pages)
            now = time.time()
            batch = Batch(now, stats=PageStats(now))
            for page in kept:
                batch.add(page, ())
            await write_pages(db, batch, batch.dropped)
            await db.execute("COMMIT")
        except BaseException:
            # A cancelled aiosqlite call still runs: roll back whatever it left open.
            await db.rollback()
            raise
    return len(pages) - len(kept)


async def _insert_requests(
    db: aiosqlite.Connection, pages: Sequence[PageResult]
) -> list[PageResult]:
    """Insert the pages' request rows under the next free keys; the pages whose row went
    in, keyed (the unique index ignored the others)."""
    ((first,),) = await db.execute_fetchall("SELECT COALESCE(MAX(id), 0) + 1 FROM requests")
    keyed = list(pages)
    for i, page in enumerate(keyed):
        _keep(page.request, first + i)
    # Every key from `first` on was free when the transaction began.
    new = await insert_requests(db, list(Store.request_rows([p.request for p in keyed], None)))
    return [page for page in keyed if page.request.key in new]


def _keep(request: Request, key: int) -> None:
    """The request as its row stores it: keyed, and under the unique index even when
    dont_filter (its fingerprint is then the random id the frontier gave it). Changed in
    place: the collector decoded it for this commit alone."""
    assert request.fp, "a collected page's request needs its fingerprint"
    request.key = key
    request.dont_filter = False
