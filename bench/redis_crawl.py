"""A crawl kept in Redis against the SQLite frontier, in the same run (issue 13).

Four configurations of `crawler crawl` of the bench spider, in turn, several rounds (the
order rotates each round), on two sites served by nginx (gensite, as run.py serves them):
a single host of `--pages` pages, and ten hosts of `--host-pages` pages each
(127.0.0.2-.11, `hosts_spider.py`):

1. `sqlite`: the default frontier, one process (the baseline);
2. `redis`: FRONTIER=redis://..., the collector crawling in the same process;
3. `redis-w1`: `--workers 1`, one `crawler work` process beside the collector;
4. `redis-w2`: `--workers 2`.

Each Redis run gets a fresh redis-server (no persistence). Per run: wall seconds, pages/s,
and the CPU-seconds of every process of the crawl: the crawler and its worker processes
(os.wait4 on the crawler; its workers are its children, reaped by it) plus redis-server's
own (`INFO cpu` used_cpu_user + used_cpu_sys, after minus before). nginx is the site
and is not counted; it runs on core 0, the rest where the kernel puts them. A run counts
only if it exits 0 within `--timeout` and `crawler export` gives every page once with its
title; one that does not is printed with its log and left out of the medians. From `INFO
commandstats` and `INFO stats`: Lua calls (EVALSHA) and Redis commands per page (the
commands the scripts run included).

Then:

- `kill`: a slower site (aiohttp, each page answered after `--delay` s) crawled with
  `--workers 2` and the default LEASE (10 s); one worker is SIGKILLed mid-crawl, and the
  script reads Redis to time how long its leases take to be reaped (none of its tokens in
  `crawl:{ID}:leases`, `expired` in `crawl:{ID}:stats` risen by their number) and leased
  again (each of its requests seen under a lease of another worker, or, once reaped, none
  left at the front of its host's queue: a look every 20 ms can miss a 50 ms lease on a
  busy machine). The crawl must still end with every page's item exactly once.
- `finish`: what one Redis core sustains: finishes with `--links` new links a page, in
  batches of 64 (one FINISH_MANY script each, as a worker sends them), on a fresh
  redis-server; Redis CPU-seconds per page and pages per Redis CPU-second.

The tables are printed, and written into RESULTS.md between this script's markers unless
`--no-write`.

    .venv/bin/python bench/redis_crawl.py                      # ~15 minutes on 2 cores
    .venv/bin/python bench/redis_crawl.py --parts finish --no-write
    .venv/bin/python bench/redis_crawl.py --parts crawl --sites single --configs sqlite,redis
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import gensite
import redis
import serve
from run import VENV_BIN, measure, write_results

from crawler.http import Request
from crawler.redisfrontier import RedisFrontier
from crawler.tools.benchsite import expected_titles, index_title

BENCH = Path(__file__).resolve().parent
CONFIGS = ["sqlite", "redis", "redis-w1", "redis-w2"]
SETTINGS = ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false"]
HOSTS = [f"127.0.0.{i}" for i in range(2, 12)]
BENCH_SPIDER = "crawler.tools.bench:BenchSpider"
CRAWL_ID = "bench"  # the bench spiders' CRAWL_ID, so keys are crawl:{bench}:...


class RedisServer:
    """A throwaway redis-server without persistence, and a client of it."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(folder), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        """redis-server's CPU-seconds so far (its main thread and the rest)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def calls(self) -> tuple[int, int]:
        """Lua script calls (EVALSHA and EVAL) and commands processed so far."""
        stats = self.client.info("commandstats")
        lua = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))
        return lua, int(self.client.info("stats")["total_commands_processed"])

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


@dataclass(frozen=True)
class Run:
    """One crawl, measured and checked."""

    site: str
    config: str
    round: int
    pages: int
    seconds: float
    crawler_cpu: float  # the crawler and its worker processes
    redis_cpu: float
    lua_calls: int
    commands: int

    @property
    def cpu(self) -> float:
        return self.crawler_cpu + self.redis_cpu

    @property
    def rate(self) -> float:
        return self.pages / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.pages


def crawl_argv(config: str, site: str, url: str, db: Path, frontier: str) -> list[str]:
    """The `crawler crawl` command of a configuration."""
    target = (
        str(BENCH / "hosts_spider.py") if site == "hosts" else "crawler.tools.bench:BenchSpider"
    )
    argv = [str(VENV_BIN / "crawler"), "crawl", target, "--db", str(db), "-q"]
    settings = [*SETTINGS]
    if site == "single":
        settings.append(f"START_URL={url}")
    if config != "sqlite":
        settings += [f"FRONTIER={frontier}", f"CRAWL_ID={CRAWL_ID}"]
    if config.startswith("redis-w"):
        argv += ["--workers", config.removeprefix("redis-w")]
    return argv + [arg for s in settings for arg in ("-s", s)]


def expected(site: str, pages: int, base: str | None = None) -> dict[tuple[str, str], str]:
    """(host, path) -> title of every page of the site."""
    titles = {**expected_titles(pages), "/": index_title(pages)}
    hosts = HOSTS if site == "hosts" else [base or "127.0.0.1"]
    return {(host, path): title for host in hosts for path, title in titles.items()}


def check_items(db: Path, want: dict[tuple[str, str], str]) -> str | None:
    """Why the stored items are not every page once with its title, or None."""
    export = [str(VENV_BIN / "crawler"), "export", str(db)]
    out = subprocess.run(export, capture_output=True, text=True, check=True).stdout
    items = [json.loads(line) for line in out.splitlines() if line.strip()]
    stored: dict[tuple[str, str], str] = {}
    for item in items:
        parts = urlsplit(item["url"])
        stored[(parts.hostname or "", parts.path)] = item["title"]
    if len(items) != len(want) or stored != want:
        return f"{len(items)} items, {len(stored)} distinct, {len(want)} expected"
    return None


def one_run(
    site: str, config: str, rnd: int, url: str, want: dict, work: Path, timeout: float
) -> Run | None:
    """One configuration's crawl, measured and checked; None if it does not count (it
    failed, or ran past `timeout` and was killed)."""
    folder = work / f"{site}-{config}-{rnd}"
    folder.mkdir()
    server = RedisServer(folder) if config != "sqlite" else None
    try:
        before = (server.cpu(), *server.calls()) if server else (0.0, 0, 0)
        argv = crawl_argv(config, site, url, folder / "crawl.db", server.url if server else "")
        seconds, status, usage = measure(argv, folder, folder / "log.txt", timeout)
        after = (server.cpu(), *server.calls()) if server else (0.0, 0, 0)
    finally:
        if server:
            server.stop()
    problem = f"exit status {status}" if status else check_items(folder / "crawl.db", want)
    if problem:
        print((folder / "log.txt").read_text()[-3000:], file=sys.stderr)
        print(f"{site} {config} round {rnd + 1} does not count: {problem}", flush=True)
        return None
    shutil.rmtree(folder)
    return Run(
        site, config, rnd, len(want), seconds, usage.ru_utime + usage.ru_stime,
        after[0] - before[0], after[1] - before[1], after[2] - before[2],
    )  # fmt: skip


def crawls(args: argparse.Namespace, work: Path) -> list[Run]:
    """Every site, every round, every configuration (rotating order)."""
    gensite.write_single(work / "single", args.pages, gensite.base_url("127.0.0.1", args.port))
    gensite.write_hosts(work / "hosts", HOSTS, args.host_pages, args.port)
    sites = {"127.0.0.1": work / "single", **{h: work / "hosts" / h for h in HOSTS}}
    nginx = serve.start(sites, args.port)
    os.environ["BENCH_START_URLS"] = " ".join(f"http://{h}:{args.port}/" for h in HOSTS)
    runs: list[Run] = []
    try:
        for site, pages in (("single", args.pages), ("hosts", args.host_pages)):
            if site not in args.sites.split(","):
                continue
            want = expected(site, pages)
            for rnd in range(args.rounds):
                configs = args.configs.split(",")
                order = configs[rnd % len(configs) :] + configs[: rnd % len(configs)]
                for config in order:
                    run = one_run(site, config, rnd, nginx.url, want, work, args.timeout)
                    if run is None:
                        continue
                    runs.append(run)
                    print(
                        f"{site} round {rnd + 1} {config:8}: {run.seconds:6.2f} s"
                        f" {run.rate:6.0f} pages/s CPU {run.crawler_cpu:6.2f} + redis"
                        f" {run.redis_cpu:5.2f} s, {run.cpu_per_1000:.3f} CPU-s/1000 pages,"
                        f" {run.lua_calls / run.pages:.2f} Lua calls/page,"
                        f" {run.commands / run.pages:.1f} commands/page",
                        flush=True,
                    )
    finally:
        nginx.stop()
    return runs


def crawl_table(runs: list[Run]) -> str:
    """Medians per site and configuration, with the ratios to the same round's SQLite run."""
    lines = [
        "| site | configuration | wall s | pages/s | crawler CPU-s | redis CPU-s | CPU-s "
        "| CPU-s / 1,000 pages | CPU/page ÷ SQLite's (same round) | pages/s ÷ SQLite's "
        "| Lua calls / page | Redis commands / page |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for site in dict.fromkeys(r.site for r in runs):
        base = {r.round: r for r in runs if r.site == site and r.config == "sqlite"}
        for config in CONFIGS:
            mine = [r for r in runs if r.site == site and r.config == config]
            if not mine:
                continue

            def med(values: list[float]) -> float:
                return statistics.median(values)

            paired = [(r, base[r.round]) for r in mine if r.round in base]
            cpu_ratio = rate_ratio = float("nan")  # no SQLite run to compare with
            if paired:
                cpu_ratio = med([r.cpu_per_1000 / b.cpu_per_1000 for r, b in paired])
                rate_ratio = med([r.rate / b.rate for r, b in paired])
            lines.append(
                f"| {site} ({mine[0].pages:,} pages) | {config}"
                f" | {med([r.seconds for r in mine]):.1f}"
                f" | {med([r.rate for r in mine]):,.0f} | {med([r.crawler_cpu for r in mine]):.2f}"
                f" | {med([r.redis_cpu for r in mine]):.2f} | {med([r.cpu for r in mine]):.2f}"
                f" | {med([r.cpu_per_1000 for r in mine]):.3f} | {cpu_ratio:.2f}×"
                f" | {rate_ratio:.2f}× | {med([r.lua_calls / r.pages for r in mine]):.2f}"
                f" | {med([r.commands / r.pages for r in mine]):.2f} |"
            )
    return "\n".join(lines)


def raw_table(runs: list[Run]) -> str:
    lines = [
        "| site | round | configuration | wall s | pages/s | crawler CPU-s | redis CPU-s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.site} | {r.round + 1} | {r.config} | {r.seconds:.2f} | {r.rate:,.0f}"
            f" | {r.crawler_cpu:.2f} | {r.redis_cpu:.2f} |"
        )
    return "\n".join(lines)


# -- kill: a worker SIGKILLed mid-crawl, its leases taken back ---------------------------

_SLOW_SITE = """
import asyncio, sys
from aiohttp import web
from crawler.tools.benchsite import make_app

async def main(pages, delay):
    app = make_app(pages)

    @web.middleware
    async def late(request, handler):
        await asyncio.sleep(delay)
        return await handler(request)

    app.middlewares.append(late)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


@dataclass(frozen=True)
class Kill:
    """One crawl with a worker SIGKILLed: how long until its leases were taken back."""

    held: int  # leases the killed worker held
    reaped: float  # seconds from the kill until its tokens were gone and counted expired
    leased_again: float  # ... until each of its requests was seen leased by another worker
    problem: str | None


def worker_leases(client: redis.Redis, prefix: str) -> dict[int, tuple[bytes, bytes, bytes]]:
    """token -> (worker, host, request) of every lease held now."""
    tokens = [int(t) for t in client.zrange(prefix + "leases", 0, -1)]
    pipe = client.pipeline(transaction=False)
    for token in tokens:
        pipe.hmget(f"{prefix}lease:{token}", "worker", "host", "req")
    return {t: tuple(v) for t, v in zip(tokens, pipe.execute(), strict=True) if v[0]}


def counted(client: redis.Redis, prefix: str) -> int:
    """The crawl's count of expired leases."""
    return int(client.hget(prefix + "stats", "expired") or 0)


def queued(client: redis.Redis, prefix: str, wanted: set[tuple[bytes, bytes]]) -> bool:
    """Whether any of `wanted` (host, request) waits at the front of its host's queues,
    where a reaped lease's request goes back; a request leaves a queue only when leased."""
    pipe = client.pipeline(transaction=False)
    hosts = sorted({host for host, _ in wanted})
    for host in hosts:
        pipe.zrange(prefix + f"qp:{host.decode()}", 0, -1)
    heads = client.pipeline(transaction=False)
    for host, prios in zip(hosts, pipe.execute(), strict=True):
        for prio in prios:
            heads.lrange(f"{prefix}q:{host.decode()}:{prio.decode()}", 0, len(wanted))
    waiting = {blob for blobs in heads.execute() for blob in blobs}
    return any(r in waiting for _, r in wanted)


def kill_once(args: argparse.Namespace, url: str, work: Path, n: int) -> Kill:
    """Crawl the slow site with --workers 2; SIGKILL one worker; time the take-back."""
    folder = work / f"kill-{n}"
    folder.mkdir()
    server = RedisServer(folder)
    client, prefix = server.client, f"crawl:{{{CRAWL_ID}}}:"
    db = folder / "crawl.db"
    argv = crawl_argv("redis-w2", "single", url, db, server.url)
    argv += ["-s", f"CONCURRENCY={args.kill_concurrency}"]
    log = (folder / "log.txt").open("wb")
    crawler = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        time.sleep(args.kill_after)
        held = Counter(w for w, _, _ in worker_leases(client, prefix).values())
        victim = max(held, key=lambda w: held[w])  # the worker holding the most
        os.kill(int(victim.decode().rpartition(":")[2]), signal.SIGKILL)
        killed = time.monotonic()
        # Read after the kill: a lease finished just before it is not the victim's to lose.
        expired = counted(client, prefix)
        leases = worker_leases(client, prefix)
        mine = {t: (h, r) for t, (w, h, r) in leases.items() if w == victim}
        reaped = again = None
        wanted = set(mine.values())
        seen: set[tuple[bytes, bytes]] = set()
        while (reaped is None or again is None) and time.monotonic() - killed < 120:
            now = time.monotonic() - killed
            current = worker_leases(client, prefix)
            seen |= {(h, r) for w, h, r in current.values() if w != victim} & wanted
            back = reaped is not None and not queued(client, prefix, wanted)
            if again is None and (seen == wanted or back):
                again = now
            gone = not mine.keys() & current.keys()
            if reaped is None and gone and counted(client, prefix) >= expired + len(mine):
                reaped = now
            time.sleep(0.02)
        status = crawler.wait(600)
    finally:
        if crawler.poll() is None:
            crawler.kill()
            crawler.wait()
        log.close()
        server.stop()
    problem = (
        f"exit status {status}" if status else check_items(db, expected("single", args.slow_pages))
    )
    if problem:
        print((folder / "log.txt").read_text()[-3000:], file=sys.stderr)
    return Kill(len(mine), reaped or float("nan"), again or float("nan"), problem)


def kills(args: argparse.Namespace, work: Path) -> list[Kill]:
    site = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SITE, str(args.slow_pages), str(args.delay)],
        stdout=subprocess.PIPE,
    )
    try:
        assert site.stdout is not None
        url = f"http://127.0.0.1:{int(site.stdout.readline())}/"
        found = []
        for n in range(args.kills):
            kill = kill_once(args, url, work, n)
            found.append(kill)
            print(f"kill {n + 1}: {kill}", flush=True)
        return found
    finally:
        site.terminate()
        site.wait(10)


def kill_table(found: list[Kill], args: argparse.Namespace) -> str:
    lines = [
        "| run | leases the killed worker held | s until reaped (tokens gone, expired counted)"
        " | s until every one leased again | items |",
        "|---:|---:|---:|---:|---|",
    ]
    for n, k in enumerate(found, 1):
        lines.append(
            f"| {n} | {k.held} | {k.reaped:.2f} | {k.leased_again:.2f}"
            f" | {k.problem or f'{args.slow_pages + 1:,}, each once, titles exact'} |"
        )
    reaped = [k.reaped for k in found]
    again = [k.leased_again for k in found]
    lines.append(
        f"| median / max | | {statistics.median(reaped):.2f} / {max(reaped):.2f}"
        f" | {statistics.median(again):.2f} / {max(again):.2f} | |"
    )
    return "\n".join(lines)


# -- finish: what one Redis core sustains ---------------------------------------------


def page_links(page: int, links: int) -> list[Request]:
    """A page's new links: typical ~80-byte URLs on its host, none seen before."""
    host = f"www.shop-{page % 100:04d}.example.com"
    return [
        Request(f"http://{host}/catalogue/category/books/item-{page:07d}-{k:03d}/index.html")
        for k in range(links)
    ]


async def finish_loop(pages: int, links: int, work: Path) -> dict[str, float]:
    """Lease `pages` requests, then finish them in batches of 64 (one script each), each
    with `links` new links; Redis CPU-seconds and wall seconds of the finishing."""
    from redis.asyncio import Redis

    server = RedisServer(work)
    client = Redis(port=server.port)
    try:
        frontier = RedisFrontier(
            client, CRAWL_ID, per_host=10**6, delay=0, lease_seconds=3600, max_results=0
        )  # leases that outlive the loop: the links are built between lease and finish
        seeds = [Request(f"http://www.shop-{i % 100:04d}.example.com/p/{i}") for i in range(pages)]
        await frontier.admit(seeds)
        leases = []
        while len(leases) < pages:
            got = await frontier.lease("w", 1000)
            leases += got.leases
        result = b'["done",200,1234,0.05]'
        batches = [leases[i : i + 64] for i in range(0, pages, 64)]
        calls = [
            [(lease, result, page_links(n * 64 + k, links)) for k, lease in enumerate(b)]
            for n, b in enumerate(batches)
        ]  # built before the clock starts: the Python side is not Redis's cost
        cpu, started = server.cpu(), time.perf_counter()
        for batch in calls:
            answers = await frontier.finish_many(batch)
            assert all(a.ok for a in answers)
        seconds, redis_cpu = time.perf_counter() - started, server.cpu() - cpu
        counts = await frontier.counts()
        assert counts.finished == pages and counts.queued == pages * links, counts
    finally:
        await client.aclose()
        server.stop()
    return {"pages": pages, "links": links, "seconds": seconds, "redis_cpu": redis_cpu}


def finish_text(f: dict[str, float]) -> str:
    per_page = f["redis_cpu"] / f["pages"]
    return (
        f"| {f['pages']:,} | {f['links']} | {f['seconds']:.2f} | {f['pages'] / f['seconds']:,.0f}"
        f" | {f['redis_cpu']:.2f} | {per_page * 1e6:.0f} | {1 / per_page:,.0f} |"
    )


FINISH_HEAD = (
    "| pages finished | new links a page | wall s | pages/s (one client) | redis CPU-s"
    " | redis µs / page | pages per Redis CPU-second |\n|---:|---:|---:|---:|---:|---:|---:|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="crawl,kill,finish")
    parser.add_argument("--pages", type=int, default=20_000, help="the single-host site")
    parser.add_argument("--host-pages", type=int, default=2_000, help="pages per host, 10 hosts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a subset, in order")
    parser.add_argument("--sites", default="single,hosts", help="a subset")
    parser.add_argument("--port", type=int, default=8183)
    parser.add_argument("--timeout", type=float, default=300.0, help="a crawl's, seconds")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--slow-pages", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.05, help="the slow site's delay, s")
    parser.add_argument("--kill-concurrency", type=int, default=16, help="per worker")
    parser.add_argument("--kill-after", type=float, default=4.0, help="seconds into the crawl")
    parser.add_argument("--finish-pages", type=int, default=20_000)
    parser.add_argument("--links", type=int, default=40)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    parts = args.parts.split(",")
    blocks = []
    work = Path(tempfile.mkdtemp(prefix="crawler-redis-crawl-"))
    os.chmod(work, 0o755)  # nginx's worker (nobody) reads the sites below it
    try:
        if "crawl" in parts:
            runs = crawls(args, work)
            blocks += ["### Crawls: medians", crawl_table(runs), "### Every run", raw_table(runs)]
        if "kill" in parts:
            blocks += ["### A worker SIGKILLed", kill_table(kills(args, work), args)]
        if "finish" in parts:
            figures = asyncio.run(finish_loop(args.finish_pages, args.links, work))
            blocks += ["### FINISH on one Redis core", FINISH_HEAD + "\n" + finish_text(figures)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = "\n\n".join(blocks)
    print(block)
    if not args.no_write:
        write_results(block, "redis_crawl.py")


if __name__ == "__main__":
    main()
