"""Target 1 of issue 6: the bare loop, `crawler crawl`, Scrapy (and Crawlee) side by side.

One invocation generates a single-host site of N pages, serves it with nginx (pinned to
core 0), and crawls it with each tool in turn (pinned to core 1), repeating in
alternating order. Each run is measured from outside: wall time from spawn to exit, and
CPU-seconds (user + sys) and peak RSS from `os.wait4`. A run counts only if nginx's
`stub_status` saw exactly N + 1 requests (the pages and `/`) and the tool stored exactly
the N + 1 pages, each once, with its exact title. The medians go to a markdown table,
printed and written into bench/RESULTS.md between markers (the rest of the file is kept).

    /tmp/venv/bin/python bench/run.py --pages 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import gensite
import serve

from crawler.tools.benchsite import expected_titles, index_title

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
VENV_BIN = Path(sys.executable).parent
PACKAGES = {"scrapy": ["scrapy"], "crawlee": ["crawlee[parsel]"]}


@dataclass(frozen=True)
class Tool:
    """One contender: how to run it, and how to read back what it stored."""

    name: str
    argv: Callable[[str, Path], list[str]]  # (start URL, run folder) -> command
    items: Callable[[Path], Iterable[dict[str, str]]]  # run folder -> stored items
    venv: Path | None = None  # its own virtualenv, created on first use


@dataclass
class Run:
    """One measured, checked run of one tool."""

    tool: str
    repeat: int
    seconds: float
    cpu_s: float
    rss_mb: float
    requests: int
    exit_status: int
    problem: str | None  # None: the run counts
    load: float  # the 1-minute load average as it started: other work on the machine

    @property
    def pages_per_s(self) -> float:
        """Requests answered per wall-clock second."""
        return self.requests / self.seconds


def tools(args: argparse.Namespace) -> list[Tool]:
    """The contenders asked for on the command line, in their first-repeat order."""
    crawl = [str(VENV_BIN / "crawler"), "crawl", "crawler.tools.bench:BenchSpider"]
    settings = ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false"]
    every = {
        "bare": Tool(
            "bare loop",
            lambda url, d: [sys.executable, str(BENCH / "bare_loop.py"), url, str(d / "bare.db")],
            lambda d: _sqlite_items(d / "bare.db"),
        ),
        "crawler": Tool(
            "crawler",
            lambda url, d: (
                [*crawl, "--db", str(d / "crawl.db"), "-s", f"START_URL={url}"]
                + [arg for s in settings for arg in ("-s", s)]
            ),
            lambda d: _crawler_items(d / "crawl.db"),
        ),
        "scrapy": Tool(
            "Scrapy",
            lambda url, d: [
                *(str(args.scrapy_venv / "bin" / "scrapy"), "runspider"),
                *(str(BENCH / "scrapy_spider.py"), "-a", f"start_url={url}"),
                *("-o", f"{d / 'items.jsonl'}:jsonlines"),
            ],
            lambda d: _jsonl_items((d / "items.jsonl").read_text()),
            args.scrapy_venv,
        ),
        "crawlee": Tool(
            "Crawlee",
            lambda url, d: [
                *(str(args.crawlee_venv / "bin" / "python"), str(BENCH / "crawlee_spider.py")),
                url,
            ],
            lambda d: _crawlee_items(d / "storage" / "datasets" / "default"),
            args.crawlee_venv,
        ),
    }
    return [every[name] for name in args.tools.split(",")]


def _sqlite_items(db: Path) -> Iterable[dict[str, str]]:
    with sqlite3.connect(db) as conn:
        return [{"url": u, "title": t} for u, t in conn.execute("SELECT url, title FROM items")]


def _crawler_items(db: Path) -> Iterable[dict[str, str]]:
    export = [str(VENV_BIN / "crawler"), "export", str(db)]
    return _jsonl_items(subprocess.run(export, capture_output=True, text=True, check=True).stdout)


def _jsonl_items(text: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _crawlee_items(folder: Path) -> list[dict[str, str]]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name[0] != "_"]


def ensure_venv(tool: Tool) -> None:
    """Create a tool's own virtualenv with the latest release from PyPI, if missing."""
    if tool.venv is None or (tool.venv / "bin" / "python").exists():
        return
    print(f"creating {tool.venv} for {tool.name} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(tool.venv)], check=True)
    pip = [str(tool.venv / "bin" / "python"), "-m", "pip", "install", "-q", "-U"]
    subprocess.run([*pip, "pip", *PACKAGES[tool.name.lower()]], check=True)


def measure(
    argv: list[str],
    cwd: Path,
    log: Path,
    timeout: float,
    watch: Callable[[int], object] | None = None,
) -> tuple[float, int, os.struct_rusage]:
    """Run argv to its end (killed after `timeout`): wall seconds, exit status, rusage.
    `watch` is called with the child's pid once it has started."""
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        if watch is not None:
            watch(process.pid)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return seconds, process.returncode, usage


def run_once(
    tool: Tool, repeat: int, server: serve.Nginx, work: Path, args: argparse.Namespace
) -> Run:
    """One run of one tool on a fresh folder, measured, then checked."""
    folder = work / f"{tool.name.replace(' ', '-')}-{repeat}"
    folder.mkdir()
    load = os.getloadavg()[0]
    before = server.requests()
    argv = serve.pinned(1, tool.argv(server.url, folder))
    seconds, status, usage = measure(argv, folder, folder / "log.txt", args.timeout)
    requests = server.requests() - before
    problem = check(tool, folder, status, requests, args.pages)
    run = Run(
        tool.name,
        repeat,
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        requests,
        status,
        problem,
        load,
    )
    verdict = "ok" if problem is None else f"DOES NOT COUNT: {problem}"
    print(
        f"  {tool.name:10} {run.pages_per_s:8.0f} pages/s {run.cpu_s:7.1f} CPU-s "
        f"{run.rss_mb:6.0f} MB  {verdict}",
        flush=True,
    )
    if problem is not None:
        print(_tail(folder / "log.txt"), file=sys.stderr)
    return run


def check(tool: Tool, folder: Path, status: int, requests: int, pages: int) -> str | None:
    """Why the run does not count, or None: exit 0, N + 1 requests, the exact titles."""
    if status != 0:
        return f"exit status {status}"
    if requests != pages + 1:
        return f"nginx answered {requests} requests, not {pages + 1}"
    try:
        items = list(tool.items(folder))
    except (OSError, ValueError, sqlite3.Error, subprocess.CalledProcessError) as exc:
        return f"items unreadable: {exc!r}"
    stored = {urlsplit(item["url"]).path: item["title"] for item in items}
    expected = {**expected_titles(pages), "/": index_title(pages)}
    if len(items) != len(expected):
        return f"{len(items)} items stored, not {len(expected)}"
    if stored != expected:
        wrong = sum(stored.get(path) != title for path, title in expected.items())
        return f"{wrong} pages missing or with a wrong title"
    return None


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_all(contenders: list[Tool], args: argparse.Namespace, work: Path) -> list[Run]:
    """Generate, serve, and run every tool `repeats` times in alternating order."""
    site = work / "site"
    print(f"generating {args.pages} pages in {site} ...", flush=True)
    gensite.write_single(site, args.pages, gensite.base_url("127.0.0.1", args.port))
    server = serve.start({"127.0.0.1": site}, args.port)
    runs: list[Run] = []
    try:
        for repeat in range(args.repeats):
            order = contenders if repeat % 2 == 0 else contenders[::-1]
            print(f"repeat {repeat + 1} of {args.repeats}:", flush=True)
            runs += [run_once(tool, repeat, server, work, args) for tool in order]
    finally:
        server.stop()
    return runs


@dataclass(frozen=True)
class Row:
    """A tool's medians over its runs that count."""

    tool: str
    pages_per_s: float
    cpu_s: float
    rss_mb: float
    counted: int
    runs: int


def medians(contenders: list[Tool], runs: list[Run]) -> list[Row]:
    """One row per tool; zeros where no run counted."""
    rows = []
    for tool in contenders:
        mine = [r for r in runs if r.tool == tool.name]
        good = [r for r in mine if r.problem is None]

        def median(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        rows.append(
            Row(
                tool.name,
                median([r.pages_per_s for r in good]),
                median([r.cpu_s for r in good]),
                median([r.rss_mb for r in good]),
                len(good),
                len(mine),
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    """The markdown table of medians, with ratios to the bare loop."""
    bare = next((r for r in rows if r.tool == "bare loop" and r.counted), None)
    lines = [
        "| tool | pages/s | × bare loop | CPU-s | CPU × bare loop | peak RSS MB | runs counted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = f"{r.pages_per_s / bare.pages_per_s:.2f}" if bare and r.counted else "–"
        cpu = f"{r.cpu_s / bare.cpu_s:.2f}" if bare and r.counted else "–"
        lines.append(
            f"| {r.tool} | {r.pages_per_s:,.0f} | {speed} | {r.cpu_s:.1f} | {cpu} "
            f"| {r.rss_mb:.0f} | {r.counted} of {r.runs} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> str:
    """Target 1's two ratios, met or not."""
    by = {r.tool: r for r in rows if r.counted}
    crawler = by.get("crawler")
    lines = []
    for other, needed in [("bare loop", 0.9), ("Scrapy", 15.0)]:
        if crawler and other in by:
            ratio = crawler.pages_per_s / by[other].pages_per_s
            verdict = "met" if ratio >= needed else "NOT met"
            lines.append(f"- crawler / {other}: {ratio:.2f}× (target ≥ {needed}×): {verdict}")
    return "\n".join(lines)


def raw_runs(runs: list[Run]) -> str:
    """Every run, in the order it ran."""
    lines = [
        "| repeat | tool | seconds | pages/s | CPU-s | peak RSS MB | requests | load | counts |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        verdict = "yes" if r.problem is None else f"no: {r.problem}"
        lines.append(
            f"| {r.repeat + 1} | {r.tool} | {r.seconds:.2f} | {r.pages_per_s:,.0f} "
            f"| {r.cpu_s:.1f} | {r.rss_mb:.0f} | {r.requests} | {r.load:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def versions(contenders: list[Tool]) -> str:
    """The software and the machine."""
    from importlib.metadata import version

    found = {
        "python": platform.python_version(),
        **{p: version(p) for p in ["aiohttp", "selectolax", "aiosqlite", "w3lib"]},
        "nginx": _output(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
        "crawler": _git_commit(),
    }
    for tool in contenders:
        if tool.venv is not None:
            package = PACKAGES[tool.name.lower()][0].split("[")[0]
            code = f"import importlib.metadata as m; print(m.version({package!r}))"
            found[package] = _output([str(tool.venv / "bin" / "python"), "-c", code])
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    machine = f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}"
    return (
        "- machine: " + machine + "\n- versions: " + ", ".join(f"{k} {v}" for k, v in found.items())
    )


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip()


def _git_commit() -> str:
    commit = _output(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(PROJECT), "status", "--porcelain", "crawler", "storage"])
    return commit + (" + uncommitted changes in crawler/ or storage/" if dirty else "")


def report(contenders: list[Tool], runs: list[Run], args: argparse.Namespace) -> str:
    """The markdown block for RESULTS.md."""
    pinning = "nginx on core 0, each crawler on core 1" if (os.cpu_count() or 1) >= 2 else "none"
    return "\n\n".join(
        [
            f"## Target 1: single host, {args.pages:,} pages "
            f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            f"`{' '.join(['python', 'bench/run.py', *sys.argv[1:]])}`: {args.repeats} repeats "
            f"in alternating order, medians of the runs that count; pinning: {pinning}. "
            "Wall time is from spawn to exit (interpreter start-up included); CPU-s is "
            "user + sys of the child; peak RSS is its ru_maxrss.",
            table(medians(contenders, runs)),
            targets(medians(contenders, runs)),
            versions(contenders),
            "Every run (load: the 1-minute load average as the run started; the machine is "
            "shared with other work, which is why the medians are of alternating runs):\n\n"
            + raw_runs(runs),
        ]
    )


def write_results(block: str, script: str = "run.py") -> None:
    """Replace the script's block (between its markers) in RESULTS.md, keeping the rest."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    begin, end = f"<!-- {script}: begin -->", f"<!-- {script}: end -->"
    new = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        text = head + new + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    RESULTS.write_text(text)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--tools", default="bare,crawler,scrapy,crawlee",
                        help="comma-separated, of bare, crawler, scrapy, crawlee")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take")
    parser.add_argument("--scrapy-venv", type=Path, default=Path("/tmp/crawler-bench-scrapy"))
    parser.add_argument("--crawlee-venv", type=Path, default=Path("/tmp/crawler-bench-crawlee"))
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the site, databases and logs")
    return parser.parse_args()


def main() -> None:
    """Set up, run, report."""
    args = parse_args()
    contenders = tools(args)
    for tool in contenders:
        ensure_venv(tool)
    work = Path(tempfile.mkdtemp(prefix="crawler-bench-"))
    os.chmod(work, 0o755)  # nginx's worker (nobody) reads the site below it
    try:
        runs = run_all(contenders, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    block = report(contenders, runs, args)
    print("\n" + block)
    if not args.no_write:
        write_results(block)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
