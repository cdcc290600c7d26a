"""Redis memory of the Redis frontier at 1,000,000 URLs (issue 13).

Starts its own redis-server (Debian's; no persistence, so `used_memory` is the data
alone) on a free port, then:

1. admits 1,000,000 requests over 1,000 hosts through `RedisFrontier.admit` (a typical
   link: an ~80-byte URL, callback `parse_item`, depth 3, priority 0) and reads
   `INFO memory` used_memory: bytes per URL seen and pending;
2. leases and finishes every one (a collector reading and acknowledging the results as
   they come), and reads it again: bytes per URL seen once nothing is pending, with the
   2-minute "finished" markers (a retried finish is answered "again") still kept, and
   once they are trimmed;
3. for comparison, the same 1,000,000 URLs as scrapy-redis 0.9 keeps them, by
   `scrapy_redis_memory.py` in a virtualenv of its own (`--scrapy-redis-venv`, made with
   `python3 -m venv /tmp/scrapy-redis-venv && /tmp/scrapy-redis-venv/bin/pip install
   scrapy-redis`): its dupefilter's SET of 40-character hex SHA1 fingerprints and its
   priority queue's ZSET of pickled requests. Without that virtualenv, the dupefilter's
   SET alone, written here.

Per pending request = (1) - (2, markers expired). Targets: under 100 bytes per seen URL,
under 300 per pending request.

    .venv/bin/python bench/redis_memory.py            # ~5 minutes; writes RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from run import write_results

from crawler.http import Request
from crawler.redisfrontier import RedisFrontier

SCRAPY_REDIS_VENV = Path("/tmp/scrapy-redis-venv")
URLS = 1_000_000
HOSTS = 1_000
MARKER_SECONDS = 120  # how long a finished lease's marker lives (crawler/redislua.py)


def requests(count: int, hosts: int) -> Iterator[Request]:
    """`count` distinct typical links, spread round-robin over `hosts` hosts."""
    for i in range(count):
        host = f"www.shop-{i % hosts:04d}.example.com"
        url = f"http://{host}/catalogue/category/books/item-{i:07d}/index.html"  # 80 bytes
        yield Request(url, priority=0, depth=3, meta=None)


class Server:
    """A throwaway redis-server without persistence."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no redis-server: apt-get install redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        args += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)

    async def client(self) -> Redis:
        redis = Redis(host="127.0.0.1", port=self.port)
        for _ in range(200):
            try:
                await redis.ping()
                return redis
            except OSError:
                await asyncio.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def used(redis: Redis) -> int:
    """used_memory, bytes, with the client's other connections closed (each holds buffers
    that are not the frontier's)."""
    await redis.connection_pool.disconnect()
    info = await redis.info("memory")
    return int(info["used_memory"])


def parse_item() -> None:
    """The callback the typical request names."""


async def admit_all(frontier: RedisFrontier, count: int, hosts: int) -> None:
    batch: list[Request] = []
    pending: list[asyncio.Task[list[bool]]] = []
    for request in requests(count, hosts):
        batch.append(request.replace(callback=parse_item))
        if len(batch) == 500:
            pending.append(asyncio.create_task(frontier.admit(batch)))
            batch = []
            if len(pending) == 8:
                await asyncio.gather(*pending)
                pending = []
    pending.append(asyncio.create_task(frontier.admit(batch)))
    await asyncio.gather(*pending)


async def drain(frontier: RedisFrontier, workers: int = 64) -> None:
    """Lease and finish everything, acknowledging results as a collector would."""
    stop = asyncio.Event()

    async def worker(name: str) -> None:
        while True:
            got = await frontier.lease(name, 16)
            for lease in got.leases:
                await frontier.finish(lease.token, b"{}")
            if got.leases:
                continue
            if await frontier.done():
                return
            await asyncio.sleep(0.01)

    async def collector() -> None:
        while not stop.is_set():
            found = await frontier.results(count=5000, block_ms=100)
            if found:
                await frontier.ack(found[-1].id)

    task = asyncio.create_task(collector())
    await asyncio.gather(*(worker(f"w{i}") for i in range(workers)))
    stop.set()
    await task
    while found := await frontier.results(count=5000):
        await frontier.ack(found[-1].id)


async def scrapy_redis_dupefilter(redis: Redis, count: int, hosts: int) -> None:
    """The URLs as scrapy-redis's RFPDupeFilter stores them: SHA1 hex digests in a SET."""
    pipe = redis.pipeline(transaction=False)
    for n, request in enumerate(requests(count, hosts), 1):
        pipe.sadd("spider:dupefilter", hashlib.sha1(request.url.encode()).hexdigest())
        if n % 10_000 == 0:
            await pipe.execute()
    await pipe.execute()


def scrapy_redis(venv: Path, port: int, count: int, hosts: int) -> dict[str, Any]:
    """scrapy_redis_memory.py's figures, run with the virtualenv's python."""
    script = Path(__file__).with_name("scrapy_redis_memory.py")
    args = ["--port", str(port), "--urls", str(count), "--hosts", str(hosts)]
    out = subprocess.run([str(venv / "bin" / "python"), str(script), *args], check=True,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return dict(json.loads(out.stdout))


async def measure(count: int, hosts: int, wait_markers: bool, venv: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="redis-memory-") as folder:
        server = Server(Path(folder))
        try:
            redis = await server.client()
            base = await used(redis)
            frontier = RedisFrontier(redis, "bench", per_host=8, delay=0, max_results=0)
            start = time.perf_counter()
            await admit_all(frontier, count, hosts)
            figures["admit_s"] = time.perf_counter() - start
            counts = await frontier.counts()
            assert counts.seen == counts.queued == count, counts
            admitted = await used(redis)
            figures["seen_and_pending"] = (admitted - base) / count
            start = time.perf_counter()
            await drain(frontier)
            figures["drain_s"] = time.perf_counter() - start
            counts = await frontier.counts()
            assert counts.finished == count and counts.queued == counts.leased == 0, counts
            figures["seen_with_markers"] = (await used(redis) - base) / count
            if wait_markers:
                await asyncio.sleep(MARKER_SECONDS + 1)
                await frontier.reap()  # trims the markers
                figures["seen"] = (await used(redis) - base) / count
                figures["pending"] = figures["seen_and_pending"] - figures["seen"]
            await redis.flushall()
            if (venv / "bin" / "python").exists():
                await redis.connection_pool.disconnect()
                figures["scrapy_redis"] = await asyncio.to_thread(
                    scrapy_redis, venv, server.port, count, hosts
                )
            else:
                base = await used(redis)
                await scrapy_redis_dupefilter(redis, count, hosts)
                figures["scrapy_redis_seen"] = (await used(redis) - base) / count
            figures["version"] = float((await redis.info("server"))["redis_version"][:3])
            await redis.aclose()
        finally:
            server.stop()
    return figures


def table(f: dict[str, Any], count: int, hosts: int) -> str:
    rows = [
        ("seen and pending (after admit)", f["seen_and_pending"], ""),
        ("seen, after every page was leased and finished", f["seen_with_markers"],
         f"tokens finished in the last {MARKER_SECONDS} s still kept"),
    ]  # fmt: skip
    if "seen" in f:
        rows.append(("seen alone (markers expired)", f["seen"], "target < 100"))
        rows.append(("per pending request (the difference)", f["pending"], "target < 300"))
    if "scrapy_redis" in f:
        sr = f["scrapy_redis"]
        version = f"scrapy-redis {sr['scrapy_redis']}, Scrapy {sr['scrapy']}"
        rows.append(
            ("scrapy-redis: per seen URL (dupefilter SET of SHA1 hex)", sr["seen"], version)
        )
        rows.append(("scrapy-redis: per pending request (ZSET of pickles)", sr["pending"],
                     f"a pickled request is {sr['request_bytes']} bytes"))  # fmt: skip
    else:
        rows.append(("scrapy-redis dupefilter (SHA1 hex in a SET), same URLs",
                     f["scrapy_redis_seen"], "its encoding, written here"))  # fmt: skip
    lines = [
        f"## Redis frontier memory, {count:,} URLs over {hosts:,} hosts",
        "",
        "`python bench/redis_memory.py`: redis-server without persistence, `INFO memory`"
        " used_memory before and after; a typical request (an 80-byte URL, callback"
        f" `parse_item`, depth 3, priority 0). Admitted in {f['admit_s']:.0f} s, leased and"
        f" finished in {f['drain_s']:.0f} s (64 asyncio workers and a collector in one process).",
        "",
        "| what | bytes per URL | note |",
        "|---|---:|---|",
        *(f"| {what} | {value:.1f} | {note} |" for what, value, note in rows),
        "",
        f"- redis-server {f['version']:.1f} (Debian), jemalloc",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=URLS)
    parser.add_argument("--hosts", type=int, default=HOSTS)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the markers")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--scrapy-redis-venv", type=Path, default=SCRAPY_REDIS_VENV)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.urls, args.hosts, not args.no_wait, args.scrapy_redis_venv))
    block = table(figures, args.urls, args.hosts)
    print(block)
    if not args.no_write:
        write_results(block, "redis_memory.py")


if __name__ == "__main__":
    main()
