"""The Redis frontier against a real redis-server (Debian's), one per test.

Each test starts its own server on a free port in a temporary folder, with the
append-only file on (`appendonly yes`, `appendfsync everysec`); without a redis-server
binary the tests are skipped. Times are Redis's own (the stamps `lease` and `finish`
return), so the per-host checks do not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from crawler import redisconnect, wire
from crawler.errors import UsageError
from crawler.frontier import LocalFrontier
from crawler.http import PageResult, Request
from crawler.redisconnect import connect
from crawler.redisfrontier import Lease, RedisFrontier
from crawler.redisworker import RedisWork
from crawler.settings import Settings
from redis_server import REDIS_MISSING, Server

WORKER = Path(__file__).with_name("redis_worker.py")
pytestmark = pytest.mark.skipif(bool(REDIS_MISSING), reason=REDIS_MISSING)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Redis]:
    redis = Redis(host="127.0.0.1", port=server.port)
    yield redis
    await redis.aclose()


def pages(host: str, count: int, **kw: object) -> list[Request]:
    return [Request(f"http://{host}/p/{i}", **kw) for i in range(count)]  # type: ignore[arg-type]


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The most intervals [start, end) that overlap at any moment."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


async def test_concurrent_admits_of_the_same_urls_admit_each_once(client: Redis) -> None:
    urls = pages("a.test", 150) + pages("b.test", 150)

    async def admit(n: int) -> list[bool]:
        frontier = RedisFrontier(client, "c", per_host=4, delay=0)
        mine = urls[:]
        random.Random(n).shuffle(mine)
        return await frontier.admit(mine)

    flags = await asyncio.gather(*(admit(n) for n in range(8)))
    assert sum(sum(f) for f in flags) == 300
    counts = await RedisFrontier(client, "c", 4, 0).counts()
    assert (counts.seen, counts.queued, counts.leased) == (300, 300, 0)


async def test_dont_filter_requests_skip_the_seen_set(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    again = Request("http://a.test/x", dont_filter=True)
    assert await frontier.admit([again, again]) == [True, True]
    assert await frontier.admit([Request("http://a.test/x")]) == [True]
    counts = await frontier.counts()
    assert (counts.seen, counts.queued) == (1, 3)


async def test_a_dont_filter_request_keeps_its_uid_when_leased_again(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=2, delay=0, lease_seconds=0.2)
    again = Request("http://a.test/x", dont_filter=True)
    await frontier.admit([again, again])
    first = (await frontier.lease("w", 2)).leases
    uids = {lease.request.fp for lease in first}
    assert len(uids) == 2 and all(len(uid) == 16 for uid in uids)
    later: list[Lease] = []
    async with asyncio.timeout(10):
        while len(later) < 2:  # both leases expire and are handed out again
            later += (await frontier.lease("other", 2)).leases
            await asyncio.sleep(0.05)
    assert {lease.request.fp for lease in later} == uids
    assert all(lease.request == again for lease in later)


async def test_a_page_with_thousands_of_links_finishes_in_one_step(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0)
    await frontier.admit([Request("http://a.test/")])
    lease = (await frontier.lease("w", 1)).leases[0]
    links = pages("b.test", 9000) + pages("b.test", 10)  # the last ten seen already
    done = await frontier.finish(lease.token, b"", links)
    assert done.ok and done.new == [True] * 9000 + [False] * 10
    counts = await frontier.counts()
    assert (counts.queued, counts.seen, counts.leased) == (9000, 9001, 0)


async def test_requests_of_a_host_come_by_priority_then_in_order(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0)
    priorities = [0, 5, 0, -1, 5, 1]
    await frontier.admit(
        [Request(f"http://a.test/{i}", priority=p) for i, p in enumerate(priorities)]
    )
    order = []
    for _ in range(10):
        got = await frontier.lease("w", 5)
        if not got.leases:
            break
        assert len(got.leases) == 1  # PER_HOST=1
        order.append(got.leases[0].request.url.rsplit("/", 1)[1])
        assert (await frontier.finish(got.leases[0].token, b"")).ok
    assert order == ["1", "4", "5", "0", "2", "3"]


async def test_workers_never_exceed_per_host_and_finish_every_page_once(client: Redis) -> None:
    hosts = ("a.test", "b.test", "c.test")
    seeds = [Request(f"http://{h}/p/0") for h in hosts]
    await RedisFrontier(client, "c", 2, 0).admit(seeds)
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)

    async def worker(name: str) -> None:
        frontier = RedisFrontier(client, "c", per_host=2, delay=0)
        for _ in range(500):
            got = await frontier.lease(name, 3)
            for lease in got.leases:
                await asyncio.sleep(random.uniform(0, 0.005))
                done = await frontier.finish(lease.token, name.encode(), links(lease))
                assert done.ok
                spans[lease.host].append((got.stamp, done.stamp))
            if not got.leases:
                if await frontier.done():
                    return
                await asyncio.sleep(min(got.wait or 0.01, 0.01))

    def links(lease: Lease) -> list[Request]:  # /p/k links to 2k+1, 2k+2 (< 20) and /p/0
        k = int(lease.request.url.rsplit("/", 1)[1])
        found = [n for n in (2 * k + 1, 2 * k + 2) if n < 20]
        return [Request(f"http://{lease.host}/p/{n}") for n in [*found, 0]]

    async with asyncio.timeout(60):
        await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    for host in hosts:
        assert most_at_once(spans[host]) <= 2
        assert len(spans[host]) == 20
    frontier = RedisFrontier(client, "c", 2, 0)
    results = await frontier.results(count=100)
    assert len({(r.host, r.request) for r in results}) == len(results) == 60
    counts = await frontier.counts()
    assert (counts.finished, counts.refused, counts.queued, counts.leased) == (60, 0, 0, 0)
    assert await frontier.done()


async def test_delay_separates_hand_outs_to_one_host(client: Redis) -> None:
    await RedisFrontier(client, "c", 4, 0.05).admit(pages("a.test", 5) + pages("b.test", 5))
    stamps: dict[str, list[int]] = defaultdict(list)

    async def worker(name: str) -> None:
        frontier = RedisFrontier(client, "c", per_host=4, delay=0.05)
        for _ in range(500):
            got = await frontier.lease(name, 4)
            for lease in got.leases:
                stamps[lease.host].append(got.stamp)
                assert (await frontier.finish(lease.token, b"")).ok
            if not got.leases:
                if await frontier.done():
                    return
                await asyncio.sleep(min(got.wait or 0.01, 0.05))

    async with asyncio.timeout(30):
        await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    for times in stamps.values():
        times.sort()
        assert len(times) == 5
        assert min(b - a for a, b in itertools.pairwise(times)) >= 50_000


async def test_crawl_delay_raises_the_delay_of_its_host_only(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.admit(pages("a.test", 3) + pages("b.test", 3))
    await frontier.hold("a.test", 0.08, "Crawl-delay")
    stamps: dict[str, list[int]] = defaultdict(list)
    async with asyncio.timeout(30):
        for _ in range(200):
            got = await frontier.lease("w", 10)
            for lease in got.leases:
                stamps[lease.host].append(got.stamp)
                await frontier.finish(lease.token, b"")
            if await frontier.done():
                break
            await asyncio.sleep(min(got.wait or 0.01, 0.05))
    a = sorted(stamps["a.test"])
    assert len(a) == 3 and min(y - x for x, y in itertools.pairwise(a)) >= 80_000
    assert len(set(stamps["b.test"])) == 1  # b's three in one hand-out: no delay there


async def test_a_held_or_capped_host_does_not_block_another(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0)
    await frontier.admit(pages("a.test", 3) + pages("b.test", 3))
    await frontier.hold("a.test", 60, "Retry-After")
    got = await frontier.lease("w", 10)
    assert [lease.host for lease in got.leases] == ["b.test"]  # a held, b capped at 1
    assert got.wait is not None and 55 < got.wait <= 60  # the next host due: a, held
    await frontier.finish(got.leases[0].token, b"")
    got = await frontier.lease("w", 10)
    assert [lease.host for lease in got.leases] == ["b.test"]
    await frontier.finish(got.leases[0].token, b"")
    await frontier.admit(pages("c.test", 1))
    got = await frontier.lease("w", 10)  # b's last and c's, not a's
    assert sorted(lease.host for lease in got.leases) == ["b.test", "c.test"]
    for lease in got.leases:
        await frontier.finish(lease.token, b"")
    got = await frontier.lease("w", 10)
    assert got.leases == [] and got.wait is not None and 55 < got.wait <= 60


async def test_a_lease_over_many_ready_hosts_spreads_over_them(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=8, delay=0)
    hosts = [f"{name}.test" for name in "abcde"]
    await frontier.admit([r for host in hosts for r in pages(host, 6)])
    got = (await frontier.lease("w", 10)).leases
    assert sorted(lease.host for lease in got) == sorted(hosts * 2)  # two each, not 8 of a
    got = (await frontier.lease("w", 3)).leases
    assert len({lease.host for lease in got}) == 3
    rest = (await frontier.lease("w", 100)).leases  # each host's last pages: fewer than 8
    taken = [lease.token for lease in [*got, *rest]]
    assert len(rest) == 17 and len(set(taken)) == len(taken)
    assert (await frontier.lease("w", 100)).leases == []


async def test_a_host_s_share_stops_at_its_free_slots(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=3, delay=0)
    await frontier.admit(pages("a.test", 10))
    first = (await frontier.lease("w", 10)).leases
    assert len(first) == 3
    assert (await frontier.lease("w", 10)).leases == []
    got = (await frontier.lease("w", 10, [first[0].token, first[1].token])).leases
    assert len(got) == 2


async def test_counters_are_exact_after_a_mixed_batch(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=10, delay=0)
    prefix = frontier.prefix
    await frontier.admit(pages("a.test", 5) + pages("b.test", 1))
    leases = (await frontier.lease("w", 6)).leases
    by_url = {lease.request.url: lease for lease in leases}
    ok, twice, late, wrong = (by_url[f"http://a.test/p/{i}"] for i in range(4))
    (done,) = await frontier.finish_many([(by_url["http://a.test/p/4"], b"", [])])
    assert done.ok
    await client.zadd(prefix + "leases", {str(late.token): 1}, xx=True)  # expired
    wrong = wrong._replace(blob=ok.blob)  # names another request than its lease holds
    links = [
        *pages("a.test", 7),  # five seen, two new
        Request("http://c.test/1"), Request("http://c.test/1"),  # new once
        Request("http://c.test/1", dont_filter=True),  # queued whatever was seen
    ]  # fmt: skip
    answers = await frontier.finish_many(
        [
            (ok, b"1", links),
            (twice, b"2", []),
            (twice, b"2", []),  # the same page twice in a batch: "again"
            (late, b"3", pages("d.test", 1)),  # refused: its links are not admitted
            (wrong, b"4", []),
            (by_url["http://a.test/p/4"], b"5", []),  # finished before: "again"
        ]
    )
    assert [(a.ok, a.again, a.admitted) for a in answers] == [
        (True, False, 4), (True, False, 0), (True, True, 0), (False, False, 0),
        (False, False, 0), (True, True, 0),
    ]  # fmt: skip
    counts = await frontier.counts()
    assert (counts.finished, counts.refused, counts.expired) == (3, 2, 1)
    lengths = [await client.llen(key) async for key in client.scan_iter(prefix + "q:*")]
    assert counts.queued == sum(lengths) == 5  # a's 2 new and p/2 again, c's 2
    assert counts.leased == 2  # wrong's and b's
    inflight = {
        host: int(await client.hget(prefix + f"host:{host}", "inflight") or 0)
        for host in ("a.test", "b.test", "c.test")
    }
    assert inflight == {"a.test": 1, "b.test": 1, "c.test": 0}
    ready = await client.zrange(prefix + "ready", 0, -1)
    assert sorted(ready) == [b"a.test", b"c.test"]


async def test_a_released_lease_frees_its_host_slot_once_before_its_finish(
    client: Redis,
) -> None:
    frontier = RedisFrontier(client, "c", per_host=2, delay=0)
    await frontier.admit(pages("a.test", 6))
    first = (await frontier.lease("w", 10)).leases
    assert len(first) == 2  # the cap
    got = await frontier.lease("w", 10, [first[0].token, first[0].token])  # its fetch is over
    assert len(got.leases) == 1  # one slot freed, however many times it is said
    done = await frontier.finish_many([(lease, b"", []) for lease in [*first, *got.leases]])
    assert all(answer.ok for answer in done)
    assert len((await frontier.lease("w", 10)).leases) == 2  # not 3: no slot freed twice


async def test_a_finish_for_another_request_than_its_lease_holds_is_refused(
    client: Redis,
) -> None:
    # After Redis lost the tail of its append-only file, a token may be handed out again
    # for another request: the finish names the request it was leased, and is checked.
    frontier = RedisFrontier(client, "c", per_host=2, delay=0)
    await frontier.admit(pages("a.test", 2))
    first, second = (await frontier.lease("w", 2)).leases
    assert not (await frontier.finish(first.token, b"wrong", [], second.blob)).ok
    (done,) = await frontier.finish_many([(first, b"right", [])])
    assert done.ok and (await frontier.counts()).refused == 1
    assert [r.result for r in await frontier.results()] == [b"right"]


async def test_a_refused_finish_s_links_are_sent_again_by_the_next_page(client: Redis) -> None:
    # A worker's own cache of links seen must not keep a link its refused finish never
    # admitted: with one worker, no page would ever send it again.
    redis = RedisFrontier(client, "c", per_host=4, delay=0)
    await redis.begin("s", pages("a.test", 2), 0, False)
    work = RedisWork(redis, LocalFrontier(Settings.build({"ROBOTS": False})), "s")
    await work.open([])
    feed = asyncio.create_task(work.feed())
    try:
        first, second = await work.get(), await work.get()
        assert first is not None and second is not None
        await client.zrem(redis.prefix + "leases", first.key)  # the lease is lost
        link = Request("http://a.test/new")
        await work.commit([PageResult(first, status=200, requests=[link])])
        assert work.refused == 1 and (await redis.counts()).queued == 0
        await work.commit([PageResult(second, status=200, requests=[link])])
        assert work.refused == 1 and (await redis.counts()).queued == 1
    finally:
        work.stop()
        await feed


async def test_an_expired_lease_is_leased_again_and_the_late_finish_refused(
    client: Redis,
) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0, lease_seconds=0.3)
    await frontier.admit([Request("http://a.test/x")])
    first = (await frontier.lease("slow", 1)).leases[0]
    second = None
    for _ in range(100):  # until Redis's clock passes the expiry
        got = await frontier.lease("fast", 1)
        if got.leases:
            second = got.leases[0]
            break
        await asyncio.sleep(0.05)
    assert second is not None and second.request.url == first.request.url
    assert second.token > first.token
    assert not (await frontier.finish(first.token, b"late")).ok
    assert (await frontier.finish(second.token, b"on time")).ok
    counts = await frontier.counts()
    assert (counts.refused, counts.expired, counts.finished) == (1, 1, 1)
    results = await frontier.results()
    assert [r.result for r in results] == [b"on time"]


async def test_leases_given_back_are_queued_again_at_once(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=3, delay=0)
    await frontier.admit(pages("a.test", 3))
    leases = (await frontier.lease("stopping", 3)).leases
    kept, back = leases[0], leases[1:]
    assert await frontier.give_back([lease.token for lease in back] + [999]) == 2
    counts = await frontier.counts()
    assert (counts.queued, counts.leased, counts.expired) == (2, 1, 0)
    again = (await frontier.lease("other", 3)).leases  # their host slots are free too
    assert sorted(x.request.url for x in again) == sorted(x.request.url for x in back)
    assert not (await frontier.finish(back[0].token, b"")).ok  # no longer its lease
    assert (await frontier.finish(kept.token, b"")).ok


async def test_a_worker_stopped_while_leasing_gives_the_leases_back(client: Redis) -> None:
    # Stopped while its lease call is out: the reply's requests are fetched by no one, and
    # go back to the queue at once instead of when their leases expire. Where the call
    # goes out relative to stop() depends on the event loop: stop after 0, 1, 2... turns
    # until a lease was taken (the fence moved) before the stop.
    redis = RedisFrontier(client, "c", per_host=4, delay=0)
    await redis.begin("s", pages("a.test", 4), 0, False)
    caught = 0
    for turns in range(40):
        work = RedisWork(redis, LocalFrontier(Settings.build({"ROBOTS": False})), "s")
        await work.open([])
        feed = asyncio.create_task(work.feed())
        fence = int(await client.get(redis.prefix + "fence") or 0)
        getter = asyncio.create_task(work.get())
        for _ in range(turns):
            await asyncio.sleep(0)
        work.stop()
        await feed
        request = await getter
        if request is not None:  # leased in time: given back as a page in flight would not be
            await work.commit([PageResult(request, status=200)])
            break
        assert (await redis.counts()).leased == 0, f"after {turns} turns"
        caught += int(await client.get(redis.prefix + "fence") or 0) > fence
    assert caught > 0, "no stop came while a lease call was out"


async def test_pages_cut_short_by_a_stop_go_back_when_the_worker_is_done(
    client: Redis,
) -> None:
    # A stop cancels the fetches still out after STOP_GRACE: the engine releases their
    # requests and never commits their pages. Once it is done, their leases go back.
    redis = RedisFrontier(client, "c", per_host=4, delay=0)
    await redis.begin("s", pages("a.test", 3), 0, False)
    work = RedisWork(redis, LocalFrontier(Settings.build({"ROBOTS": False})), "s")
    await work.open([])
    feed = asyncio.create_task(work.feed())
    first, cut = await work.get(), await work.get()
    assert first is not None and cut is not None
    work.stop()
    await feed
    work.release(first)
    work.release(cut)  # its fetch was cancelled: no page
    await work.commit([PageResult(first, status=200)])
    assert (await redis.counts()).leased == 1
    assert await work.abandon() == 1
    counts = await redis.counts()
    assert (counts.leased, counts.queued, counts.finished, counts.expired) == (0, 2, 1, 0)
    again = (await redis.lease("other", 3)).leases  # its host slot is free too
    assert cut.url in {lease.request.url for lease in again} and len(again) == 2
    assert await work.abandon() == 0


async def test_a_renewed_lease_is_kept(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0, lease_seconds=0.3)
    await frontier.admit([Request("http://a.test/x")])
    lease = (await frontier.lease("w", 1)).leases[0]
    for _ in range(6):  # 0.6 s, twice the lease
        await asyncio.sleep(0.1)
        assert await frontier.renew([lease.token]) == [True]
        assert (await frontier.lease("other", 1)).leases == []
    assert (await frontier.finish(lease.token, b"")).ok
    assert (await frontier.counts()).expired == 0
    assert await frontier.renew([lease.token]) == [False]


async def test_results_wait_for_the_collector_and_a_backlog_stops_leasing(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=1, delay=0, max_results=3)
    await frontier.admit([Request(f"http://h{i}.test/") for i in range(5)])
    got = await frontier.lease("w", 3)
    for lease in got.leases:
        await frontier.finish(lease.token, lease.host.encode())
    blocked = await frontier.lease("w", 3)
    assert (blocked.leases, blocked.reason) == ([], "backlog")
    two = await frontier.results(count=2)
    assert len(two) == 2
    again = await frontier.results(count=2)
    assert [r.id for r in again] == [r.id for r in two]  # read, not acknowledged: still there
    await frontier.ack(two[-1].id)
    rest = await frontier.results(count=10, block_ms=100)
    assert len(rest) == 1
    assert sorted(r.result for r in two + rest) == sorted(x.host.encode() for x in got.leases)
    assert wire.decode(rest[0].request, rest[0].host).url == f"http://{rest[0].host}/"
    last = await frontier.lease("w", 3)  # one result waits: below the bound
    assert len(last.leases) == 2
    for lease in last.leases:
        await frontier.finish(lease.token, b"")
    assert (await frontier.lease("w", 3)).reason == "backlog"
    await frontier.ack(rest[-1].id)
    assert (await frontier.lease("w", 3)).reason == ""
    assert await frontier.done()


async def test_state_survives_a_redis_restart_from_its_append_only_file(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's own retries off: the frontier's are the ones under test.
    client = Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0))
    frontier = RedisFrontier(client, "c", per_host=2, delay=0, lease_seconds=60)
    await frontier.admit(pages("a.test", 10))
    held = (await frontier.lease("w", 2)).leases
    await frontier.finish(held[0].token, b"one")
    before = await frontier.counts()
    server.kill()

    async def restart() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)

    with caplog.at_level(logging.WARNING, logger="crawler.redisfrontier"):
        async with asyncio.timeout(30):
            after, _ = await asyncio.gather(frontier.counts(), restart())
    assert after == before
    assert sum("unreachable" in r.message for r in caplog.records) == 1
    assert (await frontier.finish(held[1].token, b"two")).ok  # the lease outlived the restart
    assert (await frontier.finish(held[0].token, b"one")).again  # and the finished mark
    assert len(await frontier.results()) == 2
    await client.aclose()


async def test_crawl_ids_are_isolated_and_every_key_carries_its_tag(client: Redis) -> None:
    one = RedisFrontier(client, "one", per_host=2, delay=0)
    two = RedisFrontier(client, "two", per_host=2, delay=0)
    assert await one.admit(pages("a.test", 3)) == [True] * 3
    assert await two.admit(pages("a.test", 3)) == [True] * 3
    lease = (await one.lease("w", 1)).leases[0]
    await one.finish(lease.token, b"", pages("b.test", 1))
    assert (await two.counts()).queued == 3
    assert (await one.counts()).queued == 3
    keys = [key.decode() for key in await client.keys("*")]
    assert keys and all(k.startswith(("crawl:{one}:", "crawl:{two}:")) for k in keys)


async def test_robots_txt_is_fetched_by_one_process_and_read_by_all(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=2, delay=0)
    claims = await asyncio.gather(*(frontier.robots("a.test", f"w{i}") for i in range(6)))
    assert sum(claim.fetch for claim in claims) == 1
    assert all(claim.text is None for claim in claims)
    await frontier.set_robots("a.test", "User-agent: *\nDisallow: /private")
    again = await asyncio.gather(*(frontier.robots("a.test", f"w{i}") for i in range(6)))
    assert {claim.text for claim in again} == {"User-agent: *\nDisallow: /private"}


async def test_a_crawl_is_created_and_seeded_once_however_many_begin_it(client: Redis) -> None:
    start = [*pages("a.test", 3), Request("http://a.test/again", dont_filter=True)]

    async def begin(n: int) -> tuple[bool, str]:
        frontier = RedisFrontier(client, "c", per_host=4, delay=0)
        begun = await frontier.begin("tree", start, max_pages=0, probe=False)
        return begun.created, begun.token

    assert await RedisFrontier(client, "c", 4, 0).meta() is None
    begun = await asyncio.gather(*(begin(n) for n in range(8)))
    assert sum(created for created, _ in begun) == 1
    assert len({token for _, token in begun}) == 1
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    counts = await frontier.counts()
    assert (counts.queued, counts.seen) == (4, 3)
    meta = await frontier.meta()
    assert meta is not None and (meta.spider, meta.token, meta.state) == (
        "tree",
        begun[0][1],
        "running",
    )
    assert (meta.max_pages, meta.probe) == (0, False) and meta.created > 1e9


async def test_a_crawl_of_another_spider_is_refused_and_states_are_kept(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.set_state("stopped")  # no crawl yet: nothing is created
    assert await frontier.meta() is None
    first = await frontier.begin("tree", pages("a.test", 2), max_pages=7, probe=True)
    with pytest.raises(
        UsageError, match="crawl 'c' in Redis belongs to spider 'tree', not 'other'"
    ):
        await frontier.begin("other", pages("b.test", 2), max_pages=0, probe=False)
    await frontier.set_state("stopped")
    meta = await frontier.meta()
    assert meta is not None and (meta.state, meta.max_pages, meta.probe) == ("stopped", 7, True)
    again = await frontier.begin("tree", pages("a.test", 5), max_pages=9, probe=False)
    assert (again.created, again.token) == (False, first.token)
    meta = await frontier.meta()  # joined: this run's MAX_PAGES bounds the crawl now
    assert meta is not None and (meta.state, meta.max_pages, meta.probe) == ("running", 9, True)
    assert (await frontier.counts()).queued == 2  # joined: not seeded again
    await frontier.set_state("ended")
    assert (await frontier.meta()) == dataclasses.replace(meta, state="ended")


async def test_a_crawl_written_by_another_version_is_refused_untouched(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.begin("tree", pages("a.test", 2), max_pages=0, probe=False)
    meta = await frontier.meta()
    assert meta is not None and meta.format == wire.FORMAT
    key = frontier.prefix + "meta"
    await client.hdel(key, "format")  # as written before the format was recorded
    before = await client.hgetall(key)
    problem = (
        r"^crawl 'c' in Redis was written by another version of the crawler"
        r" \(requests in format 1; this one reads 2\)"
    )
    with pytest.raises(UsageError, match=problem):
        await frontier.begin("tree", pages("a.test", 2), max_pages=5, probe=False)
    assert await client.hgetall(key) == before and (await frontier.counts()).queued == 2
    work = RedisWork(frontier, LocalFrontier(Settings.build({"ROBOTS": False})), "tree")
    with pytest.raises(UsageError, match=problem):
        await work.open([])


async def test_max_pages_bounds_the_pages_finished_across_workers(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    hosts = ("a.test", "b.test", "c.test", "d.test")
    await frontier.begin("tree", [r for h in hosts for r in pages(h, 5)], 5, probe=False)
    reasons = set()

    async def worker(name: str) -> int:
        mine = RedisFrontier(client, "c", per_host=4, delay=0)
        finished = 0
        for _ in range(100):
            got = await mine.lease(name, 3)
            reasons.add(got.reason)
            for lease in got.leases:
                await asyncio.sleep(random.uniform(0, 0.005))
                finished += (await mine.finish(lease.token, b"")).ok
            if not got.leases and await mine.done():
                return finished
            await asyncio.sleep(0.001)
        raise AssertionError("never done")

    async with asyncio.timeout(30):
        finished = await asyncio.gather(worker("w1"), worker("w2"))
    assert sum(finished) == 5
    counts = await frontier.counts()
    assert (counts.finished, counts.queued, counts.leased, counts.max_pages) == (5, 15, 0, 5)
    assert counts.complete and await frontier.done()
    assert (await frontier.lease("w3", 10)).reason == "limit" and "limit" in reasons


async def test_with_probe_a_host_sends_one_request_until_its_robots_txt_is_known(
    client: Redis,
) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.begin("tree", pages("a.test", 10), max_pages=0, probe=True)
    first = await frontier.lease("w", 10)
    assert len(first.leases) == 1
    assert (await frontier.lease("w", 10)).leases == []
    await frontier.set_robots("a.test", "User-agent: *\nAllow: /")
    more = await frontier.lease("w", 10)
    assert len(more.leases) == 3  # four in flight: PER_HOST
    await frontier.finish(first.leases[0].token, b"")
    assert len((await frontier.lease("w", 10)).leases) == 1


async def test_without_probe_a_host_gets_per_host_from_the_start(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.begin("tree", pages("a.test", 10), max_pages=0, probe=False)
    assert len((await frontier.lease("w", 10)).leases) == 4


async def test_workers_report_and_old_heartbeats_are_dropped(client: Redis) -> None:
    frontier = RedisFrontier(client, "c", per_host=4, delay=0)
    await frontier.heartbeat("old", {"host": "m1", "pid": 10, "pages": 3})
    await asyncio.sleep(0.3)
    await frontier.heartbeat("new", {"host": "m2", "pid": 20, "pages": 5, "leases": [1, 2]})
    both = await frontier.workers()
    assert [w["worker"] for w in both] == ["new", "old"]
    assert both[0]["pages"] == 5 and both[0]["leases"] == [1, 2] and both[1]["pid"] == 10
    assert both[1]["age"] >= 0.3 > both[0]["age"] >= 0
    assert both[1]["heartbeat"] < both[0]["heartbeat"] < time.time() + 5
    assert [w["worker"] for w in await frontier.workers(within=0.2)] == ["new"]
    assert [w["worker"] for w in await frontier.workers()] == ["new"]  # "old" deleted
    await frontier.leave("new")
    assert await frontier.workers() == []


async def test_connect_answers_with_a_client_or_one_line_naming_the_url(server: Server) -> None:
    client = await connect(f"redis://127.0.0.1:{server.port}/0")
    assert await client.ping()
    await client.aclose()
    with socket.socket() as refused:  # bound, never listening
        refused.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{refused.getsockname()[1]}/0"
        with pytest.raises(UsageError) as caught:
            await connect(url, patience=0.3)
    assert str(caught.value) == f"FRONTIER={url}: cannot reach Redis (Connection refused)"


async def test_connect_s_client_packs_commands_as_redis_py_does(server: Server) -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    client = await connect(f"redis://127.0.0.1:{server.port}/0")
    packed = await client.connection_pool.get_connection()
    try:
        assert type(packed) is redisconnect.PackedConnection
        plain = Connection()
        for args in [
            ("SET", b"k\x00\xff", "v\u00e9", 7, -2.5),
            ("SCRIPT LOAD", "return 1"),
            (b"EVALSHA", b"abc", 1, b"key", bytearray(b"ba"), memoryview(b"mv"), 10**15),
        ]:
            assert b"".join(packed.pack_command(*args)) == b"".join(
                bytes(part) for part in plain.pack_command(*args)
            ), args
        with pytest.raises(DataError):
            packed.pack_command("SET", "k", None)
    finally:
        await client.connection_pool.release(packed)
    await client.set(b"k\x00\xff", "v\u00e9")  # and the server takes what it packs
    assert await client.get(b"k\x00\xff") == "v\u00e9".encode()
    await client.aclose()


async def test_connect_refuses_a_redis_older_than_the_scripts_need(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server here is newer than 6.2: ask for a version no server has.
    monkeypatch.setattr(redisconnect, "MIN_VERSION", (99, 0))
    url = f"redis://127.0.0.1:{server.port}/0"
    with pytest.raises(
        UsageError,
        match=r"^FRONTIER=redis://\S+: Redis \d+\.\d+\.\d+; the crawl needs 99\.0 or later$",
    ):
        await connect(url, patience=0.3)


async def test_connect_refuses_a_malformed_url() -> None:
    for url, problem in [
        ("http://127.0.0.1:6379/0", "expected redis://HOST:PORT/N"),
        ("redis://127.0.0.1:port/0", "the port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:70000/0", "the port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:6379/first", "the database 'first' is not a number"),
        ("redis://:6379/0", "no host: expected redis://HOST:PORT/N"),
    ]:
        with pytest.raises(UsageError) as caught:
            await connect(url, patience=0.3)
        assert str(caught.value) == f"FRONTIER={url}: {problem}"
    with pytest.raises(UsageError, match=r"^FRONTIER=redis://u:\*\*\*@127"):
        await connect("redis://u:secret@127.0.0.1:6379/x")


def _worker(server: Server, name: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, str(WORKER), str(server.port), "procs", name, "2", "1.0", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


async def test_worker_processes_share_the_limits_and_a_killed_one_loses_nothing(
    server: Server, client: Redis
) -> None:
    hosts = ("a.test", "b.test", "c.test")
    frontier = RedisFrontier(client, "procs", per_host=2, delay=0)
    await frontier.admit([r for h in hosts for r in pages(h, 15)])
    stalled = _worker(server, "stalled", "stall")
    assert stalled.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(stalled.stdout.readline), 30)
    taken = json.loads(line)["leased"]
    assert len(taken) == 2
    stalled.send_signal(signal.SIGKILL)
    stalled.wait(10)
    workers = [_worker(server, f"w{i}") for i in range(3)]
    outputs = [await asyncio.to_thread(w.communicate, timeout=90) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0]
    lines = [json.loads(text) for out, _ in outputs for text in out.splitlines()]
    assert all(line["ok"] for line in lines)
    assert sorted(line["url"] for line in lines) == sorted(
        r.url for h in hosts for r in pages(h, 15)
    )
    assert set(taken) <= {line["url"] for line in lines}  # leased again after the kill
    for host in hosts:
        assert most_at_once([(x["start"], x["end"]) for x in lines if x["host"] == host]) <= 2
    counts = await frontier.counts()
    assert (counts.finished, counts.expired, counts.queued, counts.leased) == (45, 2, 0, 0)
