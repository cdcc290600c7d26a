"""Read-only SQL over a crawl database: what each view of the dashboard shows.

Every function takes an open read-only connection (`mode=ro`: a running crawl's writer
is never blocked, WAL readers see the last commit) and returns plain JSON-able data.
Parameters come in already validated (app.py); they reach SQL only as bound values, and
sort keys only through the whitelists below. Each view reads an index or a small table
(`minutes`, `hosts`, `host_times`, `live`), so it stays fast on a million pages
(bench/dashboard_queries.py). A database made before those tables existed still opens:
the summary falls back to counting the pages, the other views show what they can.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from crawler.storage.recording import bucket_seconds, header_pairs
from crawler.storage.sqlite import read_summary
from crawler.storage.states import DONE, FAILED, QUEUED, REDIRECTED, SKIPPED

LIVE_STALE = 15.0  # seconds without a heartbeat after which a "running" crawl is not
RATE_WINDOW = 5  # minutes of the recent pages/s behind the ETA
FILTER_SCAN = 100_000  # items a filtered read looks at, at most
MAX_MINUTES = 720  # points at most on the rate chart; older minutes are merged
HOST_SORTS = ("host", "done", "failed", "skipped", "waiting", "in_flight", "p50", "p95", "bytes")
STATE_NAMES = {
    QUEUED: "queued",
    DONE: "done",
    FAILED: "failed",
    SKIPPED: "skipped",
    REDIRECTED: "redirected",
}


@dataclass(frozen=True, slots=True)
class Schema:
    """Which of the dashboard's tables and columns the database has."""

    tables: frozenset[str]
    page_columns: frozenset[str]

    @property
    def counted(self) -> bool:
        """Whether the per-minute and per-host counts are kept."""
        return {"minutes", "hosts", "host_times", "live"} <= self.tables


def schema_of(db: sqlite3.Connection) -> Schema:
    """The tables and the columns of `requests` the database has."""
    tables = frozenset(r[0] for r in db.execute("SELECT name FROM sqlite_master"))
    columns = frozenset(r[1] for r in db.execute("PRAGMA table_info(requests)"))
    return Schema(tables, columns)


def _crawl_keys(db: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM crawl")}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def summary(db: sqlite3.Connection, schema: Schema, now: float | None = None) -> dict[str, Any]:
    """The crawl: spider, state, times, counts, the recent rate and the ETA."""
    now = time.time() if now is None else now
    keys = _crawl_keys(db)
    facts: dict[str, Any] = {"spider": keys.get("spider", "")}
    if schema.counted:
        row = db.execute(
            "SELECT COALESCE(SUM(pages), 0), COALESCE(SUM(failed), 0), COALESCE(SUM(skipped), 0),"
            " COALESCE(SUM(items), 0), COALESCE(SUM(bytes), 0), COALESCE(SUM(retries), 0)"
            " FROM minutes"
        ).fetchone()
        names = ("done", "failed", "skipped", "items", "bytes", "retries")
        facts.update(zip(names, (int(v) for v in row), strict=True))
        facts["queued"] = db.execute(
            f"SELECT COUNT(*) FROM requests WHERE state = {QUEUED}"
        ).fetchone()[0]
    else:
        s = read_summary(db)
        facts.update(
            done=s.pages_done, failed=s.pages_failed, skipped=s.pages_skipped, items=s.items,
            bytes=s.bytes, retries=s.retries, queued=s.pages_queued,
        )  # fmt: skip
    started, beat = _float(keys.get("run_started")), _float(keys.get("heartbeat"))
    running = keys.get("run_state") == "running" and beat is not None and now - beat < LIVE_STALE
    if running:
        state = "running"
    elif facts["queued"] == 0:
        state = "finished"
    else:
        state = "stopped"
    facts["state"] = state
    facts["created"] = _float(keys.get("created"))
    facts["started"] = started
    end = now if running else beat
    facts["elapsed"] = end - started if started is not None and end is not None else None
    facts["in_flight"] = int(keys.get("in_flight", "0")) if running else 0
    facts["rate"] = _recent_rate(db, now, started) if running and schema.counted else None
    rate = facts["rate"]
    facts["eta"] = (facts["queued"] + facts["in_flight"]) / rate if running and rate else None
    return facts


def _recent_rate(db: sqlite3.Connection, now: float, started: float | None) -> float:
    """Pages/s over the last RATE_WINDOW minutes of this run (the current one up to now)."""
    since = max((int(now // 60) - RATE_WINDOW + 1) * 60, started or 0.0)
    (pages,) = db.execute(
        "SELECT COALESCE(SUM(pages + failed + skipped), 0) FROM minutes WHERE minute >= ?",
        (int(since // 60),),
    ).fetchone()
    return float(pages) / max(now - since, 1.0)


def rate(
    db: sqlite3.Connection, schema: Schema, now: float | None = None, started: float | None = None
) -> list[dict[str, Any]]:
    """Per minute (epoch minutes, gaps filled with zeros): pages/s and failures a minute.
    The minute the run `started` in counts from then, and while the crawl runs the current
    minute (`now`) counts up to now, so neither looks slower than it was."""
    if "minutes" not in schema.tables:
        return []
    rows = db.execute(
        "SELECT minute, pages + failed + skipped, failed FROM minutes ORDER BY minute"
    )
    counts = {minute: (pages, failed) for minute, pages, failed in rows}
    if not counts:
        return []
    first, last = min(counts), max(counts)
    step = max(1, -(-(last - first + 1) // MAX_MINUTES))  # minutes merged into one point
    points = []
    for start in range(first, last + 1, step):
        minutes = range(start, min(start + step, last + 1))
        pages = sum(counts.get(m, (0, 0))[0] for m in minutes)
        failed = sum(counts.get(m, (0, 0))[1] for m in minutes)
        begin, end = start * 60.0, minutes[-1] * 60.0 + 60
        if started is not None and int(started // 60) in minutes:
            begin = started
        if now is not None and int(now // 60) in minutes:
            end = now
        seconds = max(end - begin, 1.0)
        points.append({
            "minute": start,
            "pages_per_s": pages / seconds,
            "errors_per_min": failed / seconds * 60,
        })  # fmt: skip
    return points


def hosts(
    db: sqlite3.Connection, schema: Schema, running: bool, sort: str = "done", desc: bool = True
) -> list[dict[str, Any]]:
    """One row a host: pages done, failed, skipped, waiting, in flight, bytes, the median
    and 95th-percentile response time (from the histogram, to its ~9% buckets), state."""
    if sort not in HOST_SORTS:
        raise ValueError(f"unknown sort key {sort!r}")
    if not {"hosts", "host_times", "live"} <= schema.tables:
        return []
    live = {
        host: (waiting, in_flight, state)
        for host, waiting, in_flight, state in db.execute(
            "SELECT host, waiting, in_flight, state FROM live"
        )
    } if running else {}  # fmt: skip
    histograms: dict[str, list[tuple[int, int]]] = {}
    for host, bucket, count in db.execute(
        "SELECT host, bucket, count FROM host_times ORDER BY host, bucket"
    ):
        histograms.setdefault(host, []).append((bucket, count))
    rows = []
    for host, done, failed, skipped, size in db.execute(
        "SELECT host, done, failed, skipped, bytes FROM hosts"
    ):
        waiting, in_flight, state = live.get(host, (0, 0, "done" if not running else "waiting"))
        times = histograms.get(host, [])
        rows.append({
            "host": host, "done": done, "failed": failed, "skipped": skipped,
            "waiting": waiting, "in_flight": in_flight, "bytes": size,
            "p50": _percentile(times, 0.50), "p95": _percentile(times, 0.95), "state": state,
        })  # fmt: skip
    for host, (waiting, in_flight, state) in live.items():  # hosts with no page stored yet
        if not any(r["host"] == host for r in rows):
            rows.append({
                "host": host, "done": 0, "failed": 0, "skipped": 0, "waiting": waiting,
                "in_flight": in_flight, "bytes": 0, "p50": None, "p95": None, "state": state,
            })  # fmt: skip
    rows.sort(key=lambda r: r["host"])
    known = [r for r in rows if r[sort] is not None]
    known.sort(key=lambda r: r[sort], reverse=desc)  # stable: ties stay in host order
    return known + [r for r in rows if r[sort] is None]  # no response time yet: last


def _percentile(histogram: list[tuple[int, int]], fraction: float) -> float | None:
    """The upper bound of the bucket holding the `fraction` quantile, in seconds."""
    total = sum(count for _, count in histogram)
    if not total:
        return None
    rank, seen = fraction * total, 0
    for bucket, count in histogram:
        seen += count
        if seen >= rank:
            return bucket_seconds(bucket)
    return bucket_seconds(histogram[-1][0])


def error_kinds(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each kind of error (HTTP code, exception, reason for a skip) and its count, as in
    `crawler status`."""
    rows = db.execute(
        "SELECT error, COUNT(*) FROM requests WHERE error IS NOT NULL"
        " GROUP BY error ORDER BY COUNT(*) DESC, error"
    )
    return [{"kind": kind, "count": count} for kind, count in rows]


def error_pages(
    db: sqlite3.Connection, schema: Schema, kind: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The pages that ended with `kind`, by key after `after`; and the key to page on from."""
    text = "error_text" if "error_text" in schema.page_columns else "NULL"
    rows = db.execute(
        f"SELECT id, url, state, status, attempts, {text}, parent, (SELECT url FROM requests p"
        " WHERE p.id = r.parent) FROM requests r WHERE error = ? AND id > ? ORDER BY id LIMIT ?",
        (kind, after, limit + 1),
    ).fetchall()
    pages = [
        {"id": key, "url": url, "state": STATE_NAMES.get(state, str(state)), "status": status,
         "attempts": attempts, "error_text": message, "parent": parent, "parent_url": parent_url}
        for key, url, state, status, attempts, message, parent, parent_url in rows[:limit]
    ]  # fmt: skip
    return pages, (pages[-1]["id"] if len(rows) > limit else None)


def items(
    db: sqlite3.Connection, contains: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Stored items by key after `after`, those whose JSON contains `contains` (any field,
    case-sensitive); and the key to page on from. A filtered read looks at FILTER_SCAN
    items at most, so a rare match answers in bounded time (fewer rows, and a key to
    scan on from) instead of reading the whole table."""
    if contains:
        rows = db.execute(
            "SELECT id, page, data FROM items WHERE id > ? AND id <= ? AND instr(data, ?) > 0"
            " ORDER BY id LIMIT ?",
            (after, after + FILTER_SCAN, contains, limit + 1),
        ).fetchall()
    else:
        rows = db.execute(
            "SELECT id, page, data FROM items WHERE id > ? ORDER BY id LIMIT ?", (after, limit + 1)
        ).fetchall()
    found = [
        {"id": key, "page": page, "item": json.loads(data)} for key, page, data in rows[:limit]
    ]
    if len(rows) > limit:
        return found, found[-1]["id"]
    if contains:
        (last,) = db.execute("SELECT MAX(id) FROM items").fetchone()
        if last is not None and after + FILTER_SCAN < last:
            return found, after + FILTER_SCAN
    return found, None


def page(db: sqlite3.Connection, schema: Schema, key: int, limit: int) -> dict[str, Any] | None:
    """One request and its page: URL, state, status, headers, depth, time, error, the page
    that found it, its items and the links it queued (at most `limit` of each)."""
    extra = [c if c in schema.page_columns else "NULL" for c in (
        "elapsed", "response_headers", "error_text", "links_from", "links_to")]  # fmt: skip
    row = db.execute(
        "SELECT id, url, method, state, status, final_url, size, attempts, error, finished_at,"
        f" depth, parent, callback, {', '.join(extra)} FROM requests WHERE id = ?",
        (key,),
    ).fetchone()
    if row is None:
        return None
    (key, url, method, state, status, final_url, size, attempts, error, finished, depth,
     parent, callback, elapsed, headers, message, links_from, links_to) = row  # fmt: skip
    found = {
        "id": key, "url": url, "method": method, "state": STATE_NAMES.get(state, str(state)),
        "status": status, "final_url": final_url, "size": size, "attempts": attempts,
        "error": error, "error_text": message, "finished_at": finished, "depth": depth,
        "callback": callback, "elapsed": elapsed,
        "headers": header_pairs(headers) if headers else None, "parent": None,
    }  # fmt: skip
    if parent is not None:
        up = db.execute("SELECT id, url FROM requests WHERE id = ?", (parent,)).fetchone()
        found["parent"] = {"id": up[0], "url": up[1]} if up else {"id": parent, "url": None}
    found["items"] = [
        json.loads(data)
        for (data,) in db.execute(
            "SELECT data FROM items WHERE page = ? ORDER BY id LIMIT ?", (key, limit)
        )
    ]
    found["links"] = _links(db, schema, key, state, (links_from, links_to), limit)
    return found


def _links(
    db: sqlite3.Connection, schema: Schema, key: int, state: int,
    span: tuple[int | None, int | None], limit: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The requests page `key` queued: a key range read where the crawl recorded one."""
    rows: list[Any] = []
    if state == QUEUED:
        pass  # not fetched yet: no links
    elif "links_from" in schema.page_columns:
        if span[0] is not None:
            rows = db.execute(
                "SELECT id, url, state FROM requests WHERE id BETWEEN ? AND ? AND parent = ?"
                " ORDER BY id LIMIT ?",
                (*span, key, limit),
            ).fetchall()
    else:  # an older database: no key range recorded, so a scan
        rows = db.execute(
            "SELECT id, url, state FROM requests WHERE parent = ? ORDER BY id LIMIT ?",
            (key, limit),
        ).fetchall()
    return [{"id": k, "url": u, "state": STATE_NAMES.get(s, str(s))} for k, u, s in rows]
