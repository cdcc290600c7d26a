"""The spider author's loop, measured: what progress display costs, and cache replay.

On the single-host nginx site (N pages, as run.py), `crawler crawl` of the bench spider
(CONCURRENCY 64, PER_HOST 64, ROBOTS off), pinned to core 1, in alternating order:

- `quiet`: `--quiet`, no progress at all (the baseline);
- `log lines`: stderr is a file: a plain progress line every `PROGRESS_EVERY` (10 s);
- `live display`: stderr is a pseudo-terminal (120 x 40), the rich display refreshing;
- `cache replay`: `--cache FILE` filled once beforehand by a crawl of the site, each run
  into a new database: nginx must answer no request at all.

A run counts only if it exits 0 and stored exactly N + 1 items, and (except replays)
nginx answered exactly N + 1 requests. Medians of the runs that count; ratios to `quiet`.

    /tmp/venv/bin/python bench/devloop.py --pages 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gensite
import serve
from run import VENV_BIN, measure, write_results

CRAWL_SETTINGS = ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false"]
MODES = ["quiet", "log lines", "live display", "cache replay"]


@dataclass(frozen=True)
class Run:
    """One measured crawl."""

    mode: str
    seconds: float
    cpu_s: float
    requests: int
    items: int
    problem: str | None

    def pages_per_s(self, pages: int) -> float:
        return (pages + 1) / self.seconds


def crawl_argv(url: str, db: Path, extra: list[str]) -> list[str]:
    """`crawler crawl` of the bench spider into `db`."""
    argv = [str(VENV_BIN / "crawler"), "crawl", "crawler.tools.bench:BenchSpider", "--db", str(db)]
    argv += ["-s", f"START_URL={url}"]
    for setting in CRAWL_SETTINGS:
        argv += ["-s", setting]
    return argv + extra


def with_terminal(argv: list[str], cwd: Path, timeout: float) -> tuple[float, int, float]:
    """Run argv with stdout and stderr on a 120 x 40 pseudo-terminal, drained by a
    thread: wall seconds, exit status, CPU-seconds."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    drained = [0]

    def drain() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child side closed
                return
            if not chunk:
                return
            drained[0] += len(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=child, stderr=child, close_fds=True
    )
    os.close(child)
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    killer.cancel()
    reader.join(5)
    os.close(main)
    if drained[0] < 1000:
        raise SystemExit(f"the live display wrote only {drained[0]} bytes: not a terminal?")
    return seconds, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def items_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])


def run_once(mode: str, server: serve.Nginx, work: Path, pages: int, cache: Path) -> Run:
    """One crawl in `mode` into a fresh folder, measured and checked."""
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    db = folder / "crawl.db"
    extra = {
        "quiet": ["--quiet"],
        "log lines": [],
        "live display": [],
        "cache replay": ["--quiet", "--cache", str(cache)],
    }[mode]
    argv = serve.pinned(1, crawl_argv(server.url, db, extra))
    before = server.requests()
    if mode == "live display":
        seconds, status, cpu = with_terminal(argv, folder, 900)
    else:
        seconds, status, usage = measure(argv, folder, folder / "log.txt", 900)
        cpu = usage.ru_utime + usage.ru_stime
    requests = server.requests() - before
    items = items_in(db) if db.exists() else 0
    want_requests = 0 if mode == "cache replay" else pages + 1
    problem = None
    if status != 0:
        problem = f"exit status {status}"
    elif items != pages + 1:
        problem = f"{items} items stored, not {pages + 1}"
    elif requests != want_requests:
        problem = f"nginx answered {requests} requests, not {want_requests}"
    if mode == "log lines" and problem is None:
        lines = (folder / "log.txt").read_text().count("crawler.progress")
        if lines < seconds // 10:
            problem = f"only {lines} progress lines in {seconds:.0f} s"
    shutil.rmtree(folder, ignore_errors=True)
    run = Run(mode, seconds, cpu, requests, items, problem)
    verdict = "ok" if problem is None else f"DOES NOT COUNT: {problem}"
    print(
        f"  {mode:13} {run.pages_per_s(pages):7.0f} pages/s {cpu:6.1f} CPU-s  {verdict}",
        flush=True,
    )
    return run


def fill_cache(server: serve.Nginx, work: Path, cache: Path) -> None:
    """Crawl the site once with the cache, so that replays find every page in it."""
    folder = work / "fill"
    folder.mkdir()
    argv = crawl_argv(server.url, folder / "crawl.db", ["--quiet", "--cache", str(cache)])
    seconds, status, _ = measure(serve.pinned(1, argv), folder, folder / "log.txt", 900)
    if status != 0:
        raise SystemExit(f"filling the cache failed: exit {status}")
    print(f"  cache filled in {seconds:.1f} s ({cache.stat().st_size / 1e6:.0f} MB)", flush=True)


def report(runs: list[Run], pages: int, repeats: int) -> str:
    """The markdown block for RESULTS.md."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    counted = {m: [r for r in runs if r.mode == m and r.problem is None] for m in MODES}
    base = statistics.median(r.pages_per_s(pages) for r in counted["quiet"])
    lines = [
        f"## Issue 7: progress display and cache replay, {pages:,} pages ({when})",
        "",
        f"`python bench/devloop.py --pages {pages} --repeats {repeats}`: medians of the "
        "runs that count, alternating order, crawler pinned to core 1, nginx to core 0. "
        "`log lines` logs a line every 10 s (the default); `live display` runs on a "
        "pseudo-terminal; `cache replay` reads a cache filled by one earlier crawl and "
        "sends nginx no request.",
        "",
        "| mode | pages/s | × quiet | CPU-s | runs counted | pages/s of each run |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode in MODES:
        good = counted[mode]
        if not good:
            lines.append(f"| {mode} | - | - | - | 0 of {repeats} | |")
            continue
        rate = statistics.median(r.pages_per_s(pages) for r in good)
        cpu = statistics.median(r.cpu_s for r in good)
        each = ", ".join(f"{r.pages_per_s(pages):,.0f}" for r in runs if r.mode == mode)
        lines.append(
            f"| {mode} | {rate:,.0f} | {rate / base:.3f} | {cpu:.1f} | {len(good)} of "
            f"{repeats} | {each} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Generate, serve, fill the cache, run the modes, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8185)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crawler-bench-devloop-"))
    os.chmod(work, 0o755)  # nginx's worker reads the site below it
    server = None
    try:
        print(f"generating {args.pages} pages in {work / 'site'} ...", flush=True)
        gensite.write_single(work / "site", args.pages, gensite.base_url("127.0.0.1", args.port))
        server = serve.start({"127.0.0.1": work / "site"}, args.port)
        cache = work / "cache.sqlite"
        fill_cache(server, work, cache)
        runs = []
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1} of {args.repeats}:", flush=True)
            order = MODES if repeat % 2 == 0 else MODES[::-1]
            runs += [run_once(mode, server, work, args.pages, cache) for mode in order]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    block = report(runs, args.pages, args.repeats)
    print("\n" + block)
    if not args.no_write:
        write_results(block, "devloop.py")


if __name__ == "__main__":
    sys.exit(main())
