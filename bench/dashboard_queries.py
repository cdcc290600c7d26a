"""Issue 14: every view and API endpoint of `crawler serve` on a crawl database of
1,000,000 pages, timed through the real aiohttp application (query, render, JSON).

The database is synthetic but made through the store's own schema (a `Store` opens it
first, so the tables and indexes are exactly a crawl's): 1,000,000 requests over 200
hosts, 88% done, 2% failed (five kinds), 1% skipped, 9% queued; an item per done page;
each page's headers and fetch time; per-minute, per-host and histogram rows as a crawl
would have upserted them; the live per-host state of a running crawl. Each endpoint is
requested once to warm the page cache, then `--repeats` times; the table gives the median
and the slowest. Written into RESULTS.md between this script's markers.

    python bench/dashboard_queries.py [--pages 1000000] [--db PATH] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from run import write_results

from crawler.dashboard.app import make_app
from crawler.storage.recording import time_bucket
from crawler.storage.sqlite import Store
from crawler.storage.states import DONE, FAILED, QUEUED, SKIPPED

HOSTS = 200
ERRORS = ("500", "404", "TimeoutError", "ClientConnectorError", "ValueError in parse")
HEADERS = json.dumps({
    "Content-Type": "text/html; charset=utf-8", "Content-Length": "21034",
    "Date": "Mon, 30 Nov 2026 18:00:00 GMT", "Server": "nginx/1.22.1",
    "Last-Modified": "Mon, 30 Nov 2026 12:00:00 GMT", "ETag": '"6565c2a0-522a"',
})  # fmt: skip
FANOUT = 20  # page p queued pages FANOUT*p .. FANOUT*p + FANOUT-1
CRAWL_SECONDS = 3 * 3600  # the synthetic crawl's length: 180 minutes of per-minute rows


def state_of(key: int) -> int:
    """The state of request `key`: deterministic, spread through the keys."""
    if key > 910_000 * SCALE[0]:
        return QUEUED
    r = key * 2654435761 % 100
    return FAILED if r < 2 else SKIPPED if r < 3 else DONE


SCALE = [1.0]  # pages / 1,000,000, set by build()


def build(db: Path, pages: int) -> None:
    """The synthetic crawl database, through the store's schema."""
    SCALE[0] = pages / 1_000_000

    async def schema() -> None:
        async with Store(db, "bench"):
            pass

    asyncio.run(schema())
    rng = random.Random(14)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    began = time.time() - CRAWL_SECONDS - 60
    minutes: dict[int, list[int]] = {}
    hosts: dict[str, list[int]] = {}
    times: Counter[tuple[str, int]] = Counter()
    chunk: list[tuple[object, ...]] = []
    items: list[tuple[int, str]] = []
    insert = (
        "INSERT INTO requests (id, fp, url, method, priority, depth, dont_filter, parent, state,"
        " status, final_url, size, attempts, error, finished_at, elapsed, response_headers,"
        " error_text, links_from, links_to, callback)"
        " VALUES (?, ?, ?, 'GET', 0, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'parse')"
    )
    for key in range(1, pages + 1):
        host = f"site{key % HOSTS}.example:8000"
        url = f"http://{host}/catalogue/page-{key}/index.html"
        state = state_of(key)
        parent = key // FANOUT if key >= FANOUT else None
        depth = 0 if parent is None else len(str(key))
        if state == QUEUED:
            chunk.append((key, key.to_bytes(16, "big"), url, depth, parent, state) + (None,) * 11)
        else:
            finished = began + key / pages * CRAWL_SECONDS
            elapsed = rng.lognormvariate(-3.0, 0.6)
            error = rng.choice(ERRORS) if state == FAILED else None
            if state == SKIPPED:
                error = "forbidden by robots.txt"
            status = int(error) if error and error.isdigit() else 200 if state == DONE else None
            attempts = 4 if error in ("500", "TimeoutError", "ClientConnectorError") else 1
            size = 21034 if state == DONE else 0
            links = (key * FANOUT, key * FANOUT + FANOUT - 1) if state == DONE else (None, None)
            text = f"{error}: {url}" if state == FAILED else None
            chunk.append((
                key, key.to_bytes(16, "big"), url, depth, parent, state, status, url, size,
                attempts, error, finished, elapsed, HEADERS, text, *links,
            ))  # fmt: skip
            minute = minutes.setdefault(int(finished // 60), [0] * 6)
            minute[0] += state == DONE
            minute[1] += state == FAILED
            minute[2] += state == SKIPPED
            minute[3] += state == DONE
            minute[4] += size
            minute[5] += attempts - 1
            counts = hosts.setdefault(host, [0, 0, 0, 0])
            counts[state - 1] += 1
            counts[3] += size
            times[host, time_bucket(elapsed)] += 1
            if state == DONE:
                items.append((key, json.dumps({
                    "url": url, "title": f"Book {key}", "price": f"£{key % 100}.{key % 97:02}",
                    "upc": f"{key:016x}", "in_stock": key % 7 != 0,
                })))  # fmt: skip
        if len(chunk) >= 50_000:
            flush(conn, insert, chunk, items)
    flush(conn, insert, chunk, items)
    conn.executemany("INSERT INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(m, *c) for m, c in minutes.items()])  # fmt: skip
    conn.executemany("INSERT INTO hosts VALUES (?, ?, ?, ?, ?)",
                     [(h, *c) for h, c in hosts.items()])  # fmt: skip
    conn.executemany("INSERT INTO host_times VALUES (?, ?, ?)",
                     [(h, b, n) for (h, b), n in times.items()])  # fmt: skip
    states = ("fetching", "capped", "held by DELAY", "held by Retry-After", "waiting")
    conn.executemany(
        "INSERT INTO live VALUES (?, ?, ?, ?)",
        [(f"site{h}.example:8000", 450, h % 9, states[h % 5]) for h in range(HOSTS)],
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def flush(
    conn: sqlite3.Connection, insert: str, chunk: list[tuple[object, ...]],
    items: list[tuple[int, str]],
) -> None:  # fmt: skip
    conn.executemany(insert, chunk)
    conn.executemany("INSERT INTO items (page, data) VALUES (?, ?)", items)
    conn.commit()
    chunk.clear()
    items.clear()


def running(db: Path) -> None:
    """Mark the crawl as running now (as the engine's live loop does every 2 s)."""
    conn = sqlite3.connect(db)
    now = time.time()
    conn.executemany(
        "INSERT OR REPLACE INTO crawl (key, value) VALUES (?, ?)",
        [("run_state", "running"), ("heartbeat", str(now)),
         ("run_started", str(now - CRAWL_SECONDS - 60)), ("in_flight", "64")],
    )  # fmt: skip
    conn.commit()
    conn.close()


def endpoints(db: Path) -> list[str]:
    """A path for every view and API endpoint, at the start and deep in the tables."""
    conn = sqlite3.connect(db)
    (pages,) = conn.execute("SELECT MAX(id) FROM requests").fetchone()
    (mid_item,) = conn.execute("SELECT id FROM items ORDER BY id LIMIT 1 OFFSET ?",
                               (conn.execute("SELECT COUNT(*) / 2 FROM items").fetchone()[0],)
                               ).fetchone()  # fmt: skip
    (done,) = conn.execute(
        "SELECT id FROM requests WHERE state = 1 AND id > ? LIMIT 1", (pages // 40,)
    ).fetchone()
    (failed,) = conn.execute(
        "SELECT id FROM requests WHERE error = '500' AND id > ? LIMIT 1", (pages // 2,)
    ).fetchone()
    conn.close()
    return [
        "/", "/hosts", "/hosts?sort=p95", "/hosts?sort=host&order=asc", "/errors",
        "/errors?kind=500", f"/errors?kind=500&after={failed}", "/items",
        f"/items?after={mid_item}", "/items?q=Book%2077", "/items?q=not-in-any-item",
        f"/page/{done}", f"/page/{failed}",
        "/api/summary", "/api/rate", "/api/hosts?sort=p50", "/api/errors",
        f"/api/errors/pages?kind=TimeoutError&after={failed}&limit=500",
        f"/api/items?after={mid_item}&limit=500", f"/api/page/{done}",
    ]  # fmt: skip


async def measure(db: Path, repeats: int) -> list[tuple[str, float, float, int]]:
    """(path, median ms, slowest ms, bytes) for each endpoint, through the real app."""
    rows = []
    server = TestServer(make_app(db), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            for path in endpoints(db):
                running(db)
                times = []
                for attempt in range(repeats + 1):
                    began = time.perf_counter()
                    async with http.get(path) as response:
                        body = await response.read()
                        assert response.status == 200, (path, response.status, body[:200])
                    if attempt:  # the first warms the page cache
                        times.append((time.perf_counter() - began) * 1000)
                rows.append((path, statistics.median(times), max(times), len(body)))
    finally:
        await server.close()
    return rows


def report(rows: list[tuple[str, float, float, int]], pages: int, repeats: int, size: int) -> str:
    """The markdown block for RESULTS.md."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Issue 14: dashboard queries on {pages:,} pages ({when})",
        "",
        f"`python bench/dashboard_queries.py --pages {pages} --repeats {repeats}`: a synthetic "
        f"crawl database of {pages:,} requests ({size / 1e6:,.0f} MB; 200 hosts, 88% done, "
        "2% failed, 1% skipped, 9% queued, an item per done page), each endpoint requested "
        f"through the real aiohttp app (query, render, answer) once to warm up, then {repeats} "
        "times; the crawl marked running, so the summary computes its rate and ETA.",
        "",
        "| endpoint | median ms | slowest ms | bytes |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| `{p}` | {m:,.1f} | {s:,.1f} | {b:,} |" for p, m, s, b in rows]
    slow = [p for p, m, _, _ in rows if m >= 200]
    lines += ["", f"- under 200 ms (median): {len(rows) - len(slow)} of {len(rows)}"
              + (f"; not: {', '.join(f'`{p}`' for p in slow)}" if slow else "")]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Build (or reuse) the database, time every endpoint, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="reuse or keep this database")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    folder = None
    db = args.db
    if db is None:
        folder = tempfile.TemporaryDirectory(prefix="crawler-bench-dashboard-")
        db = Path(folder.name) / "crawl.db"
    if not db.exists():
        began = time.perf_counter()
        print(f"building {args.pages:,} pages into {db} ...", flush=True)
        build(db, args.pages)
        print(f"  built in {time.perf_counter() - began:.0f} s", flush=True)
    rows = asyncio.run(measure(db, args.repeats))
    block = report(rows, args.pages, args.repeats, db.stat().st_size)
    print("\n" + block)
    if not args.no_write:
        write_results(block, "dashboard_queries.py")
    if folder is not None:
        folder.cleanup()


if __name__ == "__main__":
    main()
