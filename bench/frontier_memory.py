"""Target 3 of issue 6: memory with a million URLs queued, the crawler beside Scrapy.

The `fanout` site: `/f/0.html` links to the other 999 fanout pages, and each fanout page to
1,000 unique leaves, so crawling the 1,000 fanout pages queues 1,000,000 URLs. Each tool
crawls it with MAX_PAGES pages at most (`MAX_PAGES` for the crawler,
`CLOSESPIDER_PAGECOUNT` and breadth-first order for Scrapy, whose default LIFO order would
dive into leaves), pinned to core 1. The child's RSS is sampled from /proc every 0.2 s;
"URLs found" at a moment is 1,000 x the fanout pages nginx had answered by then (an upper
bound: a page is parsed a little after it is served). Target: the crawler's peak RSS
under 200 MB, growing less than 50 MB between 100,000 and 1,000,000 URLs found.

    /tmp/venv/bin/python bench/frontier_memory.py
"""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gensite
import serve
from run import BENCH, VENV_BIN, measure, write_results

MAX_PAGES = 3_000
LINKS = gensite.FANOUT_LINKS
SCRAPY_VENV = Path("/tmp/crawler-bench-scrapy")  # run.py's default; run.py creates it


@dataclass(frozen=True)
class Result:
    """One tool's crawl of the fanout site."""

    tool: str
    seconds: float
    cpu_s: float
    peak_mb: float  # ru_maxrss
    at_100k_mb: float | None  # RSS when 100,000 URLs had been found
    after_1m_mb: float | None  # the highest RSS once 1,000,000 had been found
    pages: int  # requests nginx answered
    fanout_pages: int  # of them, fanout pages
    note: str  # exit status, URLs queued at the end where the tool tells


class Sampler:
    """A thread reading a process's VmRSS every `period` seconds until stopped."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (time.time(), MB)
        self.done = threading.Event()

    def start(self, pid: int) -> None:
        """Begin sampling `pid` (the watch callback of `measure`)."""
        threading.Thread(target=self._run, args=(pid,), daemon=True).start()

    def _run(self, pid: int) -> None:
        status = Path(f"/proc/{pid}/status")
        while not self.done.wait(self.period):
            try:
                text = status.read_text()
            except OSError:
                return
            kb = next(int(line.split()[1]) for line in text.splitlines() if line[:6] == "VmRSS:")
            self.samples.append((time.time(), kb / 1024))


def run_tool(tool: str, server: serve.Nginx, work: Path, args: argparse.Namespace) -> Result:
    """Crawl the fanout site with one tool; RSS against URLs found."""
    folder = work / tool
    folder.mkdir()
    seen = len(server.log_lines())
    sampler = Sampler()
    argv = serve.pinned(1, command(tool, server.url, folder, args.max_pages))
    seconds, status, usage = measure(argv, folder, folder / "log.txt", args.timeout, sampler.start)
    sampler.done.set()
    served = [line.split() for line in server.log_lines()[seen:]]
    fanout = sorted(float(end) for end, _, _, uri, _ in served if uri.startswith("/f/"))

    def found(at: float) -> int:
        return LINKS * bisect.bisect_right(fanout, at)

    at_100k = [mb for t, mb in sampler.samples if found(t) >= 100_000]
    after_1m = [mb for t, mb in sampler.samples if found(t) >= 1_000_000]
    return Result(
        tool,
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        at_100k[0] if at_100k else None,
        max(after_1m) if after_1m else None,
        len(served),
        len(fanout),
        f"exit {status}" + (f", {queued(folder / 'crawl.db')}" if tool == "crawler" else ""),
    )


def command(tool: str, url: str, folder: Path, max_pages: int) -> list[str]:
    """The crawl command of the crawler or Scrapy, stopping after `max_pages` pages."""
    if tool == "crawler":
        argv = [str(VENV_BIN / "crawler"), "crawl", "crawler.tools.bench:BenchSpider"]
        argv += ["--db", str(folder / "crawl.db"), "-s", f"START_URL={url}"]
        settings = ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false", f"MAX_PAGES={max_pages}"]
        return argv + [arg for s in settings for arg in ("-s", s)]
    scrapy = [str(SCRAPY_VENV / "bin" / "scrapy"), "runspider", str(BENCH / "scrapy_spider.py")]
    scrapy += ["-a", f"start_url={url}", "-o", f"{folder / 'items.jsonl'}:jsonlines"]
    settings = [
        f"CLOSESPIDER_PAGECOUNT={max_pages}",
        "DEPTH_PRIORITY=1",
        "SCHEDULER_DISK_QUEUE=scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE=scrapy.squeues.FifoMemoryQueue",
    ]
    return scrapy + [arg for s in settings for arg in ("-s", s)]


def queued(db: Path) -> str:
    """`crawler status`'s queued line."""
    status = subprocess.run(
        [str(VENV_BIN / "crawler"), "status", str(db)], capture_output=True, text=True
    )
    line = next((x for x in status.stdout.splitlines() if x.startswith("queued:")), "")
    return line.replace("queued:", "queued at the end:").strip() or "status unreadable"


def report(results: list[Result], max_pages: int) -> str:
    """The markdown block for RESULTS.md."""

    def mb(value: float | None) -> str:
        return f"{value:.0f}" if value is not None else "not reached"

    lines = [
        f"## Target 3: frontier memory, 1,000 pages × {LINKS:,} unique links, "
        f"at most {max_pages:,} pages fetched",
        "`python bench/frontier_memory.py`: one run each. URLs found: 1,000 × fanout pages "
        "answered by nginx so far.",
        "| tool | seconds | CPU-s | peak RSS MB | RSS at 100k found | highest RSS after 1M "
        "found | growth MB | pages fetched (fanout) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        growth = (
            f"{r.after_1m_mb - r.at_100k_mb:.0f}"
            if r.at_100k_mb is not None and r.after_1m_mb is not None
            else "–"
        )
        lines.append(
            f"| {r.tool} | {r.seconds:.1f} | {r.cpu_s:.1f} | {r.peak_mb:.0f} "
            f"| {mb(r.at_100k_mb)} | {mb(r.after_1m_mb)} | {growth} "
            f"| {r.pages:,} ({r.fanout_pages:,}) | {r.note} |"
        )
    return "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:])


def main() -> None:
    """Generate, serve, crawl with each tool, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8183)
    parser.add_argument("--max-pages", type=int, default=MAX_PAGES)
    parser.add_argument("--tools", default="crawler,scrapy")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crawler-bench-fanout-"))
    os.chmod(work, 0o755)
    try:
        gensite.write_fanout(work / "site")
        server = serve.start({"127.0.0.1": work / "site"}, args.port, access_log=True)
        try:
            results = [run_tool(t, server, work, args) for t in args.tools.split(",")]
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = report(results, args.max_pages)
    print(block)
    if not args.no_write:
        write_results(block, "frontier_memory.py")


if __name__ == "__main__":
    main()
