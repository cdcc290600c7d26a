"""`crawler bench`: crawl a generated site on 127.0.0.1 through the whole pipeline.

The site runs in a child process (its own event loop, its own core where there are
two), the crawl in this one, into a temporary database. The stored items are checked
against the site's titles, so a fast run that lost pages does not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from crawler.assemble import sqlite_engine
from crawler.errors import UsageError
from crawler.http import Response
from crawler.spider import Spider
from crawler.storage.sqlite import iter_items, open_readonly

BENCH_SETTINGS = {"CONCURRENCY": 64, "PER_HOST": 64, "ROBOTS": False}


class BenchSpider(Spider):
    """Stores every page's URL and title; follows every link."""

    name = "bench"

    def parse(self, response: Response) -> Any:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title is not None else None}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)


def run_bench(pages: int, overrides: Mapping[str, str], out: TextIO) -> int:
    """Serve, crawl, check, report; 0 if every page was stored once with its title."""
    from crawler.tools.benchsite import expected_titles, index_title

    if not 1 <= pages <= 1_000_000:
        raise UsageError(f"--pages {pages}: expected 1 to 1000000")
    server, url = _start_site(pages)
    try:
        with tempfile.TemporaryDirectory(prefix="crawler-bench-") as folder:
            db = Path(folder) / "bench.db"
            settings = {**BENCH_SETTINGS, **overrides, "START_URL": url}
            engine = sqlite_engine(BenchSpider(), db, settings)
            out.write(f"crawling {pages} pages at {url} ...\n")
            out.flush()
            started = time.monotonic()
            summary = asyncio.run(engine.run())
            elapsed = time.monotonic() - started
            with closing(open_readonly(db)) as conn:
                stored = {urlsplit(i["url"]).path: i["title"] for i in iter_items(conn)}
    finally:
        server.terminate()
        server.wait(10)
    expected = {**expected_titles(pages), "/": index_title(pages)}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write(
        f"pages: {summary.pages_done} done, {summary.pages_failed} failed\n"
        f"items: {summary.items}\n"
        f"time: {elapsed:.2f} s\n"
        f"pages/s: {summary.pages_done / elapsed:.0f}\n"
        f"peak memory: {peak_mb:.0f} MB\n"
    )
    if stored != expected or summary.items != len(expected):
        missing = len(expected.keys() - stored.keys())
        out.write(f"CHECK FAILED: {missing} pages missing, {summary.items} items stored\n")
        return 1
    out.write(f"check: all {len(expected)} pages stored once, titles exact\n")
    return 0


def _start_site(pages: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "crawler.tools.bench", str(pages)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://"):
        server.kill()
        raise UsageError("the bench site did not start")
    return server, url


async def _serve(pages: int) -> None:
    from crawler.tools.benchsite import serve

    async with await serve(pages) as site:
        print(site.url, flush=True)
        await asyncio.Event().wait()  # until the parent terminates us


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(int(sys.argv[1])))
