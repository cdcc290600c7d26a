"""A crawl kept in Redis, end to end: `crawler crawl` (the collector), `crawler work`
and `crawler status` as real processes, against a real redis-server and a real site on
three loopback hosts (tests/redis_server.py, tests/redis_site.py).

The faults are real too: a worker or the collector SIGKILLed, Redis SIGKILLed and
started again on its append-only file, a worker SIGSTOPped past its leases, Ctrl-C on
the collector. After each, the crawl ends with every page stored exactly once; what the
site saw (fetches per page, requests in flight per host, the gaps between request
starts) checks the limits that hold across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from crawl_cli import count_items, crawler, start, wait_for_items
from redis_server import REDIS_MISSING, Server, free_port, redis_server
from redis_site import Site, serve

pytestmark = pytest.mark.skipif(bool(REDIS_MISSING), reason=REDIS_MISSING)
if not REDIS_MISSING:
    from redis.asyncio import Redis
__all__ = ["redis_server"]  # the fixture, imported for pytest to find

SPIDER = str(Path(__file__).with_name("redis_spider.py"))
CRAWL_ID = "redissite"  # the spider's name: the crawl's name in Redis by default
PER_HOST = 2
CONCURRENCY = 4  # each process's fetch workers: the most leases one worker holds
DELAY = 0.05
# A DELAY gap is kept between hand-outs in Redis; the site sees each request a little
# later, after the worker's queue, its robots.txt check and the loopback connection, and
# that lag varies by a few milliseconds from one request to the next (more on a loaded
# machine), so two starts can come closer than DELAY by about that much.
JITTER = 0.015
WAIT = 90.0  # seconds any one process may take to end
TAG = "REDISCRAWL_TEST"  # in the environment of every process a test starts


@dataclass
class Run:
    """A `crawler` process started by a test, its output read as it goes (a full pipe
    would block it)."""

    process: asyncio.subprocess.Process
    output: asyncio.Task[tuple[bytes, bytes]]

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, number: int) -> None:
        """Send a signal to the process."""
        os.kill(self.process.pid, number)

    async def end(self) -> tuple[int, str, str]:
        """Wait for its end (WAIT at most): exit status, stdout, stderr."""
        out, err = await asyncio.wait_for(asyncio.shield(self.output), WAIT)
        code = await self.process.wait()
        return code, out.decode(), err.decode()


async def launch(*args: str) -> Run:
    """`crawler ARGS` started."""
    process = await start(*args)
    return Run(process, asyncio.ensure_future(process.communicate()))


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with serve(pages=300) as running:
        yield running


@pytest.fixture(autouse=True)
def reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process a test starts (worker processes of a killed collector too) carries
    the test's tag in its environment; whatever is left is SIGKILLed after the test."""
    monkeypatch.setenv(TAG, str(tmp_path))
    yield
    mark = f"{TAG}={tmp_path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def settings(site: Site, server: Server, *more: str) -> list[str]:
    """The -s options every process of a test's crawl takes."""
    pairs = [f"FRONTIER={server.url}", f"START_URL={site.start}", f"PER_HOST={PER_HOST}"]
    pairs += [f"CONCURRENCY={CONCURRENCY}", *more]
    return [arg for pair in pairs for arg in ("-s", pair)]


def collect(
    db: Path, site: Site, server: Server, *more: str, workers: int = 0, level: str = "ERROR"
) -> list[str]:
    """`crawler crawl` arguments: the collector (and K worker processes)."""
    args = ["crawl", SPIDER, "--db", str(db), *settings(site, server, *more)]
    return [*args, "--log-level", level] + (["--workers", str(workers)] if workers else [])


def work(site: Site, server: Server, *more: str) -> list[str]:
    """`crawler work` arguments: one more worker."""
    return ["work", SPIDER, *settings(site, server, *more), "-q"]


async def exported(db: Path) -> list[dict[str, object]]:
    """The items `crawler export` prints."""
    code, out, err = await crawler("export", str(db))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def assert_stored_once(db: Path, site: Site) -> None:
    """Every page of the site is in the export, once."""
    items = await exported(db)
    urls = [item["url"] for item in items]
    assert len(urls) == site.pages, f"{len(urls)} items for {site.pages} pages"
    assert set(urls) == {site.url(n) for n in range(site.pages)}
    assert sorted(int(str(item["n"])) for item in items) == list(range(site.pages))


async def refused(server: Server) -> int:
    """The crawl's count of finishes Redis refused (their lease was lost)."""
    async with redis_client(server) as client:
        value = await client.hget(f"crawl:{{{CRAWL_ID}}}:stats", "refused")
    return int(value or 0)


async def holds_leases(server: Server, pid: int) -> None:
    """Until the worker process `pid` holds a lease (10 s at most)."""
    prefix = f"crawl:{{{CRAWL_ID}}}:"
    async with redis_client(server) as client:
        for _ in range(500):
            for token in await client.zrange(prefix + "leases", 0, -1):
                worker = await client.hget(f"{prefix}lease:{token.decode()}", "worker")
                if worker is not None and worker.decode().endswith(f":{pid}"):
                    return
            await asyncio.sleep(0.02)
    raise AssertionError(f"worker {pid} held no lease in 10 s")


async def redis_keys(server: Server) -> set[bytes]:
    """The keys in the server's database 0."""
    async with redis_client(server) as client:
        return set(await client.keys("*"))


@contextlib.asynccontextmanager
async def redis_client(server: Server) -> AsyncIterator[Redis]:
    """A client of the test's redis-server."""
    client = Redis(host="127.0.0.1", port=server.port)
    try:
        yield client
    finally:
        await client.aclose()


def another_spider(folder: Path) -> Path:
    """A copy of the spider under another name, as a file in `folder`."""
    other = folder / "other_spider.py"
    text = Path(SPIDER).read_text().replace('name = "redissite"', 'name = "othersite"')
    other.write_text(text)
    return other


def children(parent: int) -> list[int]:
    """The pids of the processes `parent` started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"PPid:\t{parent}\n" in (entry / "status").read_text():
                    pids.append(int(entry.name))
    return pids


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def file_state(path: Path) -> tuple[bytes, int]:
    """A file's bytes and modification time, to see that nothing touched it."""
    return path.read_bytes(), path.stat().st_mtime_ns


def one_line(err: str) -> str:
    """stderr that must be a single `crawler: ...` line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawler: "), err
    return lines[0]


async def test_worker_processes_store_every_page_once_within_host_limits(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    code, _, err = await crawler(*collect(db, site, redis_server, f"DELAY={DELAY}", workers=3))
    assert code == 0, err
    await assert_stored_once(db, site)
    assert set(site.hits.values()) == {1}
    for host in site.hosts.values():
        assert host.robots == 1
        assert host.most_in_flight <= PER_HOST
        gaps = [b - a for a, b in pairwise(host.starts)]
        assert min(gaps) >= DELAY - JITTER, sorted(gaps)[:5]
    code, out, err = await crawler("status", str(db))
    assert code == 0, err
    assert "state: finished" in out
    assert f"done: {site.pages}" in out


async def test_a_crawl_delay_holds_across_worker_processes(
    redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    async with serve(pages=60, crawl_delay=0.2) as site:
        code, _, err = await crawler(*collect(db, site, redis_server, workers=3))
        assert code == 0, err
        await assert_stored_once(db, site)
    slow = site.hosts[0]  # its robots.txt asks for 0.2 s
    assert slow.robots == 1
    # The first requests may be handed out before its robots.txt is read.
    gaps = [b - a for a, b in pairwise(slow.starts[PER_HOST:])]
    assert min(gaps) >= 0.2 - JITTER, sorted(gaps)[:5]
    others = [b - a for host in (1, 2) for a, b in pairwise(site.hosts[host].starts)]
    assert min(others) < 0.2  # the other hosts are not held


async def test_a_killed_worker_s_pages_are_leased_again(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    more = (f"DELAY={DELAY}", "LEASE=2")
    workers = [await launch(*work(site, redis_server, *more)) for _ in range(2)]
    collector = await launch(*collect(db, site, redis_server, *more))
    await wait_for_items(db, 40, collector.process)
    assert collector.process.returncode is None, "the crawl ended before the kill"
    workers[0].signal(signal.SIGKILL)
    code, _, err = await collector.end()
    assert code == 0, err
    assert (await workers[1].end())[0] == 0
    assert (await workers[0].end())[0] == -signal.SIGKILL
    await assert_stored_once(db, site)
    again = [n for n, hits in site.hits.items() if hits > 1]
    assert max(site.hits.values()) <= 2
    assert len(again) <= CONCURRENCY  # the most leases the killed worker held


async def test_a_crawl_whose_worker_processes_all_die_stops_and_says_so(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    args = collect(db, site, redis_server, f"DELAY={DELAY}", "LEASE=2", workers=2)
    collector = await launch(*args)
    await wait_for_items(db, 20, collector.process)
    for pid in children(collector.pid):  # its `crawler work` processes
        os.kill(pid, signal.SIGKILL)
    code, _, err = await collector.end()
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("crawler: every worker process exited")
    code, _, err = await crawler(*collect(db, site, redis_server, f"DELAY={DELAY}", "LEASE=2"))
    assert code == 0, err  # resumed in-process
    await assert_stored_once(db, site)


async def test_a_killed_collector_run_again_completes_the_crawl(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    more = (f"DELAY={DELAY}", "LEASE=2")
    args = collect(db, site, redis_server, *more)
    workers = [await launch(*work(site, redis_server, *more)) for _ in range(2)]
    first = await launch(*args)
    await wait_for_items(db, 40, first.process)
    assert first.process.returncode is None, "the crawl ended before the kill"
    first.signal(signal.SIGKILL)
    assert (await first.end())[0] == -signal.SIGKILL
    code, _, err = await (await launch(*args)).end()
    assert code == 0, err
    for worker in workers:
        code, _, err = await worker.end()
        assert code == 0, err
    await assert_stored_once(db, site)


async def test_a_killed_collector_s_worker_processes_stop_and_a_rerun_completes(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    args = collect(db, site, redis_server, f"DELAY={DELAY}", "LEASE=2", workers=2)
    first = await launch(*args)
    await wait_for_items(db, 20, first.process)
    forked = children(first.pid)
    assert len(forked) == 2
    first.signal(signal.SIGKILL)
    assert (await first.end())[0] == -signal.SIGKILL
    for _ in range(200):  # 20 s at most
        alive = [pid for pid in forked if running(pid)]
        if not alive:
            break
        await asyncio.sleep(0.1)
    assert not alive, "worker processes outlived their collector"
    code, _, err = await crawler(*args)
    assert code == 0, err
    await assert_stored_once(db, site)


async def test_a_restarted_redis_pauses_the_crawl_and_it_goes_on(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    more = (f"DELAY={DELAY}", "LEASE=2")
    workers = [await launch(*work(site, redis_server, *more)) for _ in range(2)]
    collector = await launch(*collect(db, site, redis_server, *more))
    await wait_for_items(db, 40, collector.process)
    assert collector.process.returncode is None, "the crawl ended before the kill"
    redis_server.kill()
    await asyncio.sleep(1.0)
    assert collector.process.returncode is None, "the collector gave up on Redis"
    redis_server.start()
    code, _, err = await collector.end()
    assert code == 0, err
    for worker in workers:
        code, _, err = await worker.end()
        assert code == 0, err
    await assert_stored_once(db, site)


async def test_redis_down_longer_than_a_lease_loses_no_page(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    # One process crawls and collects; Redis is gone for longer than LEASE, so the leases
    # it held expire and their finishes are refused: those pages and the links they found
    # must still come back (the worker's cache of links seen forgets a refused page's).
    db = tmp_path / "crawl.db"
    collector = await launch(*collect(db, site, redis_server, f"DELAY={DELAY}", "LEASE=1"))
    await wait_for_items(db, 40, collector.process)
    assert collector.process.returncode is None, "the crawl ended before the kill"
    redis_server.kill()
    await asyncio.sleep(2.5)
    redis_server.start()
    code, _, err = await collector.end()
    assert code == 0, err
    await assert_stored_once(db, site)


async def test_a_worker_stopped_past_its_leases_has_its_finishes_refused(
    redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    # Slow pages and more slots per host than fetch workers in all: every process has
    # pages in flight, and the crawl (about 10 s) goes on after the worker wakes up.
    more = ("LEASE=2", "PER_HOST=8")
    async with serve(pages=240, sleep=(0.2, 0.4)) as site:
        workers = [await launch(*work(site, redis_server, *more)) for _ in range(2)]
        collector = await launch(*collect(db, site, redis_server, *more))
        await wait_for_items(db, 15, collector.process)
        await holds_leases(redis_server, workers[0].pid)
        workers[0].signal(signal.SIGSTOP)
        await asyncio.sleep(4.0)  # twice the lease: others have its pages
        workers[0].signal(signal.SIGCONT)
        assert collector.process.returncode is None, "the crawl ended while the worker slept"
        code, _, err = await collector.end()
        assert code == 0, err
        for worker in workers:
            code, _, err = await worker.end()
            assert code == 0, err
        assert await refused(redis_server) > 0
        await assert_stored_once(db, site)


async def test_ctrl_c_on_the_collector_stops_everyone_and_a_rerun_completes(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    more = (f"DELAY={DELAY}", "LEASE=2")
    args = collect(db, site, redis_server, *more, workers=1, level="WARNING")
    workers = [await launch(*work(site, redis_server, *more)) for _ in range(2)]
    first = await launch(*args)
    await wait_for_items(db, 40, first.process)
    assert first.process.returncode is None, "the crawl ended before Ctrl-C"
    first.signal(signal.SIGINT)
    code, _, err = await first.end()
    assert code == 130, err
    assert "exited with status" not in err  # its worker process stopped as it should
    for worker in workers:
        code, _, err = await worker.end()
        assert code == 0, err
    async with redis_client(redis_server) as client:  # none left to expire: given back
        assert await client.zcard(f"crawl:{{{CRAWL_ID}}}:leases") == 0
    assert count_items(db) < site.pages
    code, out, err = await crawler("status", str(db))  # what is left is queued in Redis
    assert code == 0 and "unfinished" in out and "queued: 0" not in out, out + err
    code, _, err = await (await launch(*args)).end()
    assert code == 0, err
    await assert_stored_once(db, site)


async def test_max_pages_holds_across_workers(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    code, _, err = await crawler(*collect(db, site, redis_server, "MAX_PAGES=20", workers=3))
    assert code == 0, err
    urls = [item["url"] for item in await exported(db)]
    assert len(urls) == len(set(urls)) == 20
    code, out, err = await crawler("status", str(db))  # pages are left queued in Redis
    assert code == 0 and "unfinished" in out and "queued: 0" not in out, out + err
    # Run again with a higher bound: the crawl goes on to it, as a SQLite crawl would.
    code, _, err = await crawler(*collect(db, site, redis_server, "MAX_PAGES=30", workers=2))
    assert code == 0, err
    urls = [item["url"] for item in await exported(db)]
    assert len(urls) == len(set(urls)) == 30


async def test_status_lists_the_live_workers(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    collector = await launch(*collect(db, site, redis_server, "DELAY=0.1", workers=2))
    await wait_for_items(db, 10, collector.process)
    out = ""
    for _ in range(40):
        code, out, err = await crawler("status", str(db))
        assert code == 0, err
        if "workers: 2 live" in out:
            break
        await asyncio.sleep(0.25)
    collector.signal(signal.SIGINT)
    assert (await collector.end())[0] == 130
    assert "state: running" in out
    assert "workers: 2 live" in out, out
    assert sum(" pid " in line for line in out.splitlines()) == 2, out


@pytest.mark.parametrize(
    "frontier",
    ["redis://127.0.0.1:{free}/0", "redis://127.0.0.1:notaport/0", "redis:/127.0.0.1/x"],
    ids=["unreachable", "bad-port", "malformed"],
)
async def test_a_bad_redis_url_is_one_line_and_changes_nothing(
    frontier: str, site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    url = frontier.format(free=free_port())
    for args in (
        ["crawl", SPIDER, "--db", str(db), "-s", f"FRONTIER={url}", "--workers", "2"],
        ["work", SPIDER, "-s", f"FRONTIER={url}"],
    ):
        code, _, err = await crawler(*args, "-s", f"START_URL={site.start}")
        assert code == 2, err
        one_line(err)
    assert not db.exists()
    assert not site.hits


async def test_workers_without_redis_is_one_line_and_changes_nothing(
    site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    code, _, err = await crawler(
        "crawl", SPIDER, "--db", str(db), "-s", f"START_URL={site.start}", "--workers", "2"
    )
    assert code == 2, err
    assert "FRONTIER=redis" in one_line(err)
    assert not db.exists()
    assert not site.hits


async def test_another_spider_or_another_crawl_s_db_is_refused(
    site: Site, redis_server: Server, tmp_path: Path
) -> None:
    db = tmp_path / "crawl.db"
    code, _, err = await crawler(*collect(db, site, redis_server, "MAX_PAGES=10"))
    assert code == 0, err
    other = another_spider(tmp_path)
    before = file_state(db)
    code, _, err = await crawler(*work(site, redis_server, f"CRAWL_ID={CRAWL_ID}"))
    assert code == 0, err  # the same spider joins the ended crawl and leaves at once
    keys = await redis_keys(redis_server)
    hits = sum(site.hits.values())
    other_args = ["work", str(other), *settings(site, redis_server, f"CRAWL_ID={CRAWL_ID}")]
    code, _, err = await crawler(*other_args)
    assert code == 2, err
    assert "othersite" in one_line(err)

    code, _, err = await crawler(*collect(db, site, redis_server, "CRAWL_ID=another"))
    assert code == 2, err
    one_line(err)
    sqlite_db = tmp_path / "sqlite.db"
    code, _, err = await crawler(
        "crawl", SPIDER, "--db", str(sqlite_db), "-s", f"START_URL={site.start}",
        "-s", "MAX_PAGES=3", "-q",
    )  # fmt: skip
    assert code == 0, err
    sqlite_before = file_state(sqlite_db)
    hits = sum(site.hits.values())
    code, _, err = await crawler(*collect(sqlite_db, site, redis_server, "CRAWL_ID=third"))
    assert code == 2, err
    one_line(err)

    assert file_state(db) == before
    assert file_state(sqlite_db) == sqlite_before
    assert await redis_keys(redis_server) == keys
    assert sum(site.hits.values()) == hits
