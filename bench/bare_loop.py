"""The honest baseline: the shortest reasonable asyncio crawler, not tuned down.

64 tasks on one `asyncio.Queue`, a Python `set` for dedup, one `aiohttp.ClientSession`
(`TCPConnector(limit=64)`), selectolax's Lexbor parser for the title and the links, a fast
path for the common link forms (full URL, `/abs`, `rel`, `./rel`, leading `../`) with
`urljoin` for the rest, fragments stripped, only links on the start URL's origin, and
(url, title) rows inserted with aiosqlite in batches of 500 (WAL, synchronous=NORMAL).

    python bench/bare_loop.py http://127.0.0.1:8181/ /tmp/bare.db

prints one JSON line: pages, seconds, pages_per_s, cpu_s, peak_rss_mb.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from urllib.parse import urljoin, urlsplit

import aiohttp
import aiosqlite
from selectolax.lexbor import LexborHTMLParser

WORKERS = 64
BATCH = 500


def resolve(base: str, base_dir: str, origin: str, href: str) -> str | None:
    """`href` on the page `base` as an absolute URL without fragment; None for a link to
    the page itself. `base_dir` is base up to its last '/', `origin` "scheme://host:port"."""
    href = href.strip().partition("#")[0]
    if not href:
        return None
    if href.startswith(("http://", "https://")):
        return href
    if href.startswith("/"):
        return origin + href if not href.startswith("//") else "http:" + href
    if ":" in href.partition("/")[0] or href.startswith("?"):
        return urljoin(base, href)  # another scheme (mailto:), or a query on this page
    if href.startswith("./"):
        href = href[2:]
    directory = base_dir
    while href.startswith("../"):
        href = href[3:]
        if len(directory) > len(origin) + 1:
            directory = directory[: directory.rindex("/", 0, -1) + 1]
    if "/." in href or href.startswith("."):
        return urljoin(directory, href)  # dot segments deeper in: the general algorithm
    return directory + href


class BareLoop:
    """One crawl: a queue, a seen-set, a session, a batch of rows."""

    def __init__(self, start: str, db: aiosqlite.Connection) -> None:
        parts = urlsplit(start)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.seen = {start}
        self.db = db
        self.rows: list[tuple[str, str | None]] = []
        self.pages = 0
        self.queue.put_nowait(start)

    async def run(self) -> None:
        """Crawl until the queue is empty and every worker idle."""
        connector = aiohttp.TCPConnector(limit=WORKERS)
        async with aiohttp.ClientSession(connector=connector) as session:
            workers = [asyncio.create_task(self.work(session)) for _ in range(WORKERS)]
            await self.queue.join()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        await self.flush()

    async def work(self, session: aiohttp.ClientSession) -> None:
        """Take a URL, fetch, parse, queue the new links, store the row."""
        while True:
            url = await self.queue.get()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    final = str(response.url)
                if response.status == 200:
                    await self.page(final, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"{url}: {exc!r}", file=sys.stderr)
            finally:
                self.queue.task_done()

    async def page(self, url: str, body: bytes) -> None:
        """Title and links of one page; new links queued, the row batched."""
        tree = LexborHTMLParser(body)
        title = tree.css_first("title")
        base_dir = url[: url.rindex("/") + 1]
        origin, seen, queue = self.origin, self.seen, self.queue
        for node in tree.css("a[href]"):
            link = resolve(url, base_dir, origin, node.attributes["href"] or "")
            if link is not None and link not in seen and link.startswith(origin):
                seen.add(link)
                queue.put_nowait(link)
        self.pages += 1
        self.rows.append((url, title.text() if title is not None else None))
        if len(self.rows) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Insert the batched rows in one transaction."""
        rows, self.rows = self.rows, []
        if rows:
            await self.db.executemany("INSERT INTO items (url, title) VALUES (?, ?)", rows)
            await self.db.commit()


async def crawl(start: str, path: str) -> int:
    """Crawl from `start` into the SQLite file `path`; the number of pages stored."""
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE IF NOT EXISTS items (url TEXT, title TEXT)")
        loop = BareLoop(start, db)
        await loop.run()
        return loop.pages


def main() -> None:
    """Crawl, then print one JSON line of measurements."""
    start, path = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    pages = asyncio.run(crawl(start, path))
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "pages": pages,
        "seconds": round(seconds, 3),
        "pages_per_s": round(pages / seconds, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
