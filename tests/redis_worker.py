"""A worker process of the Redis frontier tests: leases, "fetches" (a short sleep) and
finishes pages until the crawl is done, printing one JSON line per page it finished.

    python tests/redis_worker.py PORT CRAWL_ID NAME PER_HOST LEASE_SECONDS [stall]

With `stall` it leases two requests, prints them and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from redis.asyncio import Redis

from crawler.redisfrontier import RedisFrontier

ROUNDS = 2_000  # lease calls at most
SECONDS = 60.0  # and this long at most


async def main(
    port: int, crawl_id: str, name: str, per_host: int, lease: float, stall: bool
) -> None:
    client = Redis(host="127.0.0.1", port=port)
    frontier = RedisFrontier(client, crawl_id, per_host, 0.0, lease_seconds=lease)
    try:
        async with asyncio.timeout(SECONDS):
            if stall:
                await _stall(frontier, name)
            await _work(frontier, name)
    finally:
        await client.aclose()


async def _stall(frontier: RedisFrontier, name: str) -> None:
    for _ in range(ROUNDS):
        got = await frontier.lease(name, 2)
        if got.leases:
            print(json.dumps({"leased": [lease.request.url for lease in got.leases]}), flush=True)
            await asyncio.sleep(3600)
        await asyncio.sleep(0.01)


async def _work(frontier: RedisFrontier, name: str) -> None:
    for _ in range(ROUNDS):
        got = await frontier.lease(name, 2)
        for lease in got.leases:
            await asyncio.sleep(random.uniform(0, 0.01))
            done = await frontier.finish(lease.token, name.encode())
            line = {"url": lease.request.url, "host": lease.host, "start": got.stamp,
                    "end": done.stamp, "ok": done.ok}  # fmt: skip
            print(json.dumps(line), flush=True)
        if not got.leases:
            if await frontier.done():
                return
            await asyncio.sleep(min(got.wait or 0.05, 0.05))


if __name__ == "__main__":
    port, crawl_id, name, per_host, lease = sys.argv[1:6]
    stall = sys.argv[6:] == ["stall"]
    asyncio.run(main(int(port), crawl_id, name, int(per_host), float(lease), stall))
