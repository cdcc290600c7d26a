"""Profile `crawler crawl` on the single-host nginx site: the top functions by own time.

Two profilers, either or both: py-spy (sampling, little overhead: it attaches to the
pinned crawler by pid, from the other core) and cProfile (every call, with its overhead,
but exact call counts). Prints a markdown table of each, and writes them into
bench/RESULTS.md between its markers.

    /tmp/venv/bin/pip install py-spy
    /tmp/venv/bin/python bench/profile_crawl.py --pages 20000 --profiler py-spy,cprofile
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import gensite
import serve
from run import VENV_BIN, measure, write_results


def crawl_argv(url: str, folder: Path, python: list[str]) -> list[str]:
    """`crawler crawl` of the bench spider with run.py's settings, under `python`."""
    argv = [*python, "-m", "crawler", "crawl", "crawler.tools.bench:BenchSpider"]
    argv += ["--db", str(folder / "crawl.db"), "-s", f"START_URL={url}"]
    for setting in ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false"]:
        argv += ["-s", setting]
    return argv


def with_py_spy(url: str, folder: Path, top: int) -> str:
    """Sample the crawl with py-spy; own and total time by function."""
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    folded = folder / "py-spy.txt"
    spies: list[subprocess.Popen[bytes]] = []

    def attach(pid: int) -> None:
        record = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--function"]
        spy = [*record, "--format", "raw", "--output", str(folded), "--nonblocking"]
        spies.append(subprocess.Popen(serve.pinned(0, spy), stdout=subprocess.DEVNULL))

    argv = serve.pinned(1, crawl_argv(url, folder, [sys.executable]))
    seconds, status, usage = measure(argv, folder, folder / "log.txt", 900, attach)
    for spy in spies:
        spy.wait(60)
    own, total, samples = _fold(folded.read_text().splitlines())
    cpu = usage.ru_utime + usage.ru_stime
    head = (
        f"py-spy, 250 samples/s, {samples:,} samples; crawl {seconds:.1f} s, "
        f"{cpu:.1f} CPU-s, exit {status}"
    )
    rows = [
        f"| {name} | {100 * n / samples:.1f}% | {100 * total[name] / samples:.1f}% |"
        for name, n in own.most_common(top)
    ]
    return "\n".join([head, "", "| function | own | total |", "|---|---:|---:|", *rows])


def _fold(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    """Own (leaf) and total (anywhere on the stack) samples by function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")[1:]]  # [0] is the process/thread
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return own, total, samples


def _short(frame: str) -> str:
    """ "urljoin (urllib/parse.py)" -> "urljoin (urllib/parse.py)", paths cut to 2 parts."""
    name, _, where = frame.partition(" (")
    path = "/".join(where.rstrip(")").split("/")[-2:])
    return f"{name} ({path})" if where else name


def with_cprofile(url: str, folder: Path, top: int) -> str:
    """Profile the crawl with cProfile; own time (tottime) by function."""
    out = folder / "crawl.prof"
    python = [sys.executable, "-m", "cProfile", "-o", str(out)]
    argv = serve.pinned(1, crawl_argv(url, folder, python))
    seconds, status, usage = measure(argv, folder, folder / "log.txt", 1800)
    stats = pstats.Stats(str(out))
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    whole = sum(v[2] for _, v in entries)
    cpu = usage.ru_utime + usage.ru_stime
    head = f"cProfile; crawl {seconds:.1f} s, {cpu:.1f} CPU-s, exit {status}"
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in entries[:top]:
        where = "/".join(path.split("/")[-2:])
        rows.append(
            f"| {name} ({where}:{line}) | {calls:,} | {own:.2f} | {100 * own / whole:.1f}% "
            f"| {cumulative:.2f} |"
        )
    table = ["| function | calls | own s | own % | cumulative s |", "|---|---:|---:|---:|---:|"]
    return "\n".join([head, "", *table, *rows])


def main() -> None:
    """Generate, serve, profile, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=8184)
    parser.add_argument("--profiler", default="py-spy,cprofile")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crawler-bench-profile-"))
    os.chmod(work, 0o755)
    profilers = {"py-spy": with_py_spy, "cprofile": with_cprofile}
    sections = [f"## Profile of `crawler crawl`, single host, {args.pages:,} pages"]
    try:
        gensite.write_single(work / "site", args.pages, gensite.base_url("127.0.0.1", args.port))
        server = serve.start({"127.0.0.1": work / "site"}, args.port)
        try:
            for name in args.profiler.split(","):
                folder = work / name
                folder.mkdir()
                sections.append(f"### {name}\n\n{profilers[name](server.url, folder, args.top)}")
                print(sections[-1] + "\n", flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        write_results("\n\n".join(sections), "profile_crawl.py")


if __name__ == "__main__":
    main()
