"""Target 2 of issue 6: ten hosts, one of them slow, PER_HOST 4.

Ten sites of 1,000 pages on 127.0.0.2-.11 (one nginx, a server block per address, an
unbuffered access log of request timings). Two crawls by `crawler crawl` (CONCURRENCY 64,
PER_HOST 4, ROBOTS off), each pinned to core 1:

1. the nine fast hosts alone;
2. all ten, the last host answering every request 0.5 s late.

From nginx's log: the time the fast hosts take in each (first request to the last fast
answer), pages fetched twice, and the most requests in flight to one host at once (the
log gives each request's end and duration, to the millisecond: an overlap under 1 ms is
not counted). Target: fast hosts within 1.2x, nothing twice, never more than 4 in flight.

    /tmp/venv/bin/python bench/many_hosts.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import gensite
import serve
from run import VENV_BIN, measure, write_results

from crawler.tools.benchsite import expected_titles, index_title

BENCH = Path(__file__).resolve().parent
HOSTS = [f"127.0.0.{i}" for i in range(2, 12)]
SLOW = HOSTS[-1]
PER_HOST = 4
PAGES = 1_000


@dataclass(frozen=True)
class Crawl:
    """One crawl of some hosts, read back from nginx's log and the crawl's items."""

    label: str
    hosts: list[str]
    fast_seconds: float  # first request to the last answer of a fast host
    all_seconds: float  # first request to the last answer
    wall_seconds: float  # the crawler process, spawn to exit
    twice: int  # (host, path) pairs answered more than once
    max_in_flight: int  # the most requests to one host at once
    problem: str | None  # None: every page stored once, with its title


def crawl(label: str, hosts: list[str], server: serve.Nginx, work: Path, port: int) -> Crawl:
    """Crawl `hosts` from their start pages; read the log lines this crawl added."""
    folder = work / label.replace(" ", "-")
    folder.mkdir()
    seen = len(server.log_lines())
    db = folder / "crawl.db"
    argv = [str(VENV_BIN / "crawler"), "crawl", str(BENCH / "hosts_spider.py"), "--db", str(db)]
    for setting in ["CONCURRENCY=64", f"PER_HOST={PER_HOST}", "ROBOTS=false"]:
        argv += ["-s", setting]
    os.environ["BENCH_START_URLS"] = " ".join(f"http://{h}:{port}/" for h in hosts)
    wall, status, _ = measure(serve.pinned(1, argv), folder, folder / "log.txt", 900)
    lines = [line.split() for line in server.log_lines()[seen:]]
    requests = [
        (float(e) - float(d), float(e), addr, uri)
        for e, d, addr, uri, _ in lines
        if uri != serve.STATUS_PATH
    ]
    first = min(start for start, *_ in requests)
    fast_end = max(end for _, end, addr, _ in requests if addr != SLOW)
    return Crawl(
        label,
        hosts,
        fast_end - first,
        max(end for _, end, *_ in requests) - first,
        wall,
        sum(n > 1 for n in Counter((addr, uri) for *_, addr, uri in requests).values()),
        max_in_flight(requests),
        f"exit status {status}" if status else check_items(db, hosts),
    )


def max_in_flight(requests: list[tuple[float, float, str, str]]) -> int:
    """The most requests to one host at once, an overlap under 1 ms (the log's resolution)
    not counted: each [start, end) is cut by 1 ms at its start, keeping at least 1 µs."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for start, end, addr, _ in requests:
        events[addr] += [(min(start + 0.001, end - 1e-6), 1), (end, -1)]
    most = 0
    for host_events in events.values():
        current = 0
        for _, step in sorted(host_events):  # an end sorts before a start at the same time
            current += step
            most = max(most, current)
    return most


def check_items(db: Path, hosts: list[str]) -> str | None:
    """Why the stored items are not every host's pages once with their titles, or None."""
    export = [str(VENV_BIN / "crawler"), "export", str(db)]
    out = subprocess.run(export, capture_output=True, text=True, check=True).stdout
    items = [line for line in out.splitlines() if line.strip()]
    titles = {**expected_titles(PAGES), "/": index_title(PAGES)}
    expected = {(h, path): title for h in hosts for path, title in titles.items()}
    stored = {}
    for line in items:
        item = json.loads(line)
        parts = urlsplit(item["url"])
        stored[(parts.hostname, parts.path)] = item["title"]
    if len(items) != len(expected) or stored != expected:
        return f"{len(items)} items, {len(expected)} expected, {len(stored)} distinct"
    return None


def report(crawls: list[Crawl]) -> str:
    """The markdown block for RESULTS.md."""
    alone, with_slow = crawls
    ratio = with_slow.fast_seconds / alone.fast_seconds
    lines = [
        f"## Target 2: {len(HOSTS)} hosts × {PAGES:,} pages, {SLOW} 0.5 s late, "
        f"PER_HOST {PER_HOST}",
        "`python bench/many_hosts.py`: one run each; times from nginx's access log.",
        "| crawl | fast hosts' time s | all hosts' time s | process wall s | fetched twice "
        "| most in flight to one host | items |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in crawls:
        lines.append(
            f"| {c.label} | {c.fast_seconds:.2f} | {c.all_seconds:.2f} | {c.wall_seconds:.2f} "
            f"| {c.twice} | {c.max_in_flight} | {c.problem or 'all, once, titles exact'} |"
        )
    verdict = "met" if ratio <= 1.2 else "NOT met"
    lines.append(f"\n- fast hosts with / without the slow host: {ratio:.2f}× (≤ 1.2×): {verdict}")
    ok = all(c.twice == 0 and c.max_in_flight <= PER_HOST and not c.problem for c in crawls)
    lines.append(f"- nothing fetched twice, ≤ {PER_HOST} in flight per host: {ok}")
    return "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:])


def main() -> None:
    """Generate, serve, crawl twice, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8182)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crawler-bench-hosts-"))
    os.chmod(work, 0o755)
    try:
        gensite.write_hosts(work / "site", HOSTS, PAGES, args.port)
        sites = {host: work / "site" / host for host in HOSTS}
        server = serve.start(sites, args.port, slow_host=SLOW, access_log=True)
        try:
            crawls = [
                crawl("fast hosts alone", HOSTS[:-1], server, work, args.port),
                crawl("with the slow host", HOSTS, server, work, args.port),
            ]
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = report(crawls)
    print(block)
    if not args.no_write:
        write_results(block, "many_hosts.py")


if __name__ == "__main__":
    sys.exit(main())
