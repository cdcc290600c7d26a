"""Re-crawl (`crawler crawl --refresh AGE`): which pages go back to the queue, the
conditions they are fetched with, and how a refetched page is stored.

`requeue()` puts the done pages whose `finished_at` is older than AGE back in the queue
(state QUEUED) in one transaction, marked as refreshes; the frontier loads them as it
loads any queued request (a resumed crawl's), and the store sends them out with their
page's `If-None-Match` / `If-Modified-Since`. A refresh's outcome commits in its batch's
one transaction (`Refreshed`), so a kill -9 mid-refresh leaves every page either as it
was, still queued, or refreshed; never old and new items side by side.

The `refresh` column of `requests` says where a page stands:

    0 NONE            not part of a refresh
    1 REFRESH_QUEUED  queued again by --refresh; fetched with its validators
    2 NOT_MODIFIED    answered 304 in the last refresh: items untouched, finished_at renewed
    3 REPLACED        fetched again in the last refresh: its old items were replaced
    4 KEPT            the refetch failed or was skipped: the last good items stay, the
                      failure is recorded (state, status, error), and the next --refresh
                      tries it again
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from crawler.http import PageResult
from crawler.storage.sqlite import StoredRequest
from crawler.storage.states import DONE, FAILED, QUEUED, SKIPPED

NONE, REFRESH_QUEUED, NOT_MODIFIED, REPLACED, KEPT = 0, 1, 2, 3, 4
_CONDITIONS = frozenset({"if-none-match", "if-modified-since"})

_NOT_MODIFIED = f"""
UPDATE requests SET state = {DONE}, refresh = {NOT_MODIFIED}, status = ?, attempts = ?,
                    error = NULL, finished_at = ?, etag = COALESCE(?, etag),
                    last_modified = COALESCE(?, last_modified)
WHERE id = ?
"""
# The validators, final URL and size stay those of the items kept.
_KEPT = f"""
UPDATE requests SET state = ?, refresh = {KEPT}, status = ?, attempts = ?, error = ?,
                    finished_at = ?
WHERE id = ?
"""


async def requeue(db: aiosqlite.Connection, older_than: float) -> int:
    """One transaction: the pages done (or kept by a failed refresh) before the time
    `older_than` go back to the queue as refreshes; the count of them. A new refresh
    clears the last one's marks; a refresh still under way (a killed one) keeps them."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        under_way = await db.execute_fetchall(
            f"SELECT 1 FROM requests WHERE refresh = {REFRESH_QUEUED} LIMIT 1"
        )
        if not under_way:
            await db.execute(
                f"UPDATE requests SET refresh = {NONE}"
                f" WHERE refresh IN ({NOT_MODIFIED}, {REPLACED})"
            )
        cursor = await db.execute(
            f"UPDATE requests SET state = {QUEUED}, refresh = {REFRESH_QUEUED}"
            f" WHERE (state = {DONE} OR refresh = {KEPT}) AND finished_at < ?",
            (older_than,),
        )
        count = cursor.rowcount
        if count:  # the crawl is open again: the spider's `closed` runs when it ends
            await db.execute("DELETE FROM crawl WHERE key = 'closed'")
        await db.execute("COMMIT")
    except BaseException:
        await db.rollback()
        raise
    return count


def conditional(
    requests: list[StoredRequest],
    validators: Mapping[int, tuple[str | None, str | None]],
    refreshing: set[int],
) -> list[StoredRequest]:
    """Queued requests read by `Store.queued`, the refreshes among them (`validators`:
    key -> the page's ETag and Last-Modified) with their conditions; the refreshes' keys
    are added to `refreshing`."""
    loaded: list[StoredRequest] = []
    for request in requests:
        stored = validators.get(request.key)
        if stored is not None:
            refreshing.add(request.key)
            headers = conditional_headers(request.headers, *stored)
            request = dataclasses.replace(request, headers=headers)
        loaded.append(request)
    return loaded


def conditional_headers(
    headers: Mapping[str, str] | None, etag: str | None, last_modified: str | None
) -> dict[str, str] | None:
    """A request's headers with If-None-Match / If-Modified-Since from the validators its
    page was stored with (in place of any it had)."""
    merged = {k: v for k, v in (headers or {}).items() if k.lower() not in _CONDITIONS}
    if etag:
        merged["If-None-Match"] = etag
    if last_modified:
        merged["If-Modified-Since"] = last_modified
    return merged or None


@dataclass(slots=True)
class Refreshed:
    """The refreshes among a batch of pages, and what their commit does beyond the usual:
    a changed page's old items are deleted before its new ones are inserted; a 304, or a
    refetch that failed, keeps the items and updates its row its own way."""

    now: float
    keys: set[int] = field(default_factory=set)  # every refresh of the batch
    replaced: list[tuple[int]] = field(default_factory=list)  # pages whose old items go
    not_modified: list[tuple[Any, ...]] = field(default_factory=list)
    kept: list[tuple[Any, ...]] = field(default_factory=list)
    removed: int = 0  # old items deleted, once the transaction has run

    @classmethod
    def of(cls, pages: Sequence[PageResult], refreshing: set[int], now: float) -> Refreshed | None:
        """The plan for a batch, or None if it holds no refresh. Pages whose items stay
        lose the items their refetch produced (a failed callback's first ones, an errback's)."""
        plan = cls(now)
        for page in pages:
            key = page.request.key
            if key not in refreshing:
                continue
            plan.keys.add(key)
            if page.not_modified:
                plan.not_modified.append(
                    (page.status, page.attempts, now, page.etag, page.last_modified, key)
                )
            elif page.error:
                state = SKIPPED if page.skipped else FAILED
                plan.kept.append((state, page.status, page.attempts, page.error, now, key))
            else:  # done or redirected: what it holds now is the page
                plan.replaced.append((key,))
                continue
            page.items, page.types = [], None
        return plan if plan.keys else None

    def usual(self, page_rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The batch's usual page rows (the key is last), without those updated here."""
        own = {row[-1] for row in self.not_modified} | {row[-1] for row in self.kept}
        return [row for row in page_rows if row[-1] not in own] if own else page_rows

    async def before_items(self, db: aiosqlite.Connection) -> None:
        """Delete the replaced pages' old items (before their new ones are inserted)."""
        if self.replaced:
            cursor = await db.executemany("DELETE FROM items WHERE page = ?", self.replaced)
            self.removed = max(0, cursor.rowcount)

    async def after_pages(self, db: aiosqlite.Connection) -> None:
        """Mark the refreshed rows (after the usual page rows are written)."""
        if self.replaced:
            await db.executemany(
                f"UPDATE requests SET refresh = {REPLACED} WHERE id = ?", self.replaced
            )
        if self.not_modified:
            await db.executemany(_NOT_MODIFIED, self.not_modified)
        if self.kept:
            await db.executemany(_KEPT, self.kept)
