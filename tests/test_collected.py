"""The collector's side of a distributed crawl: a worker's page result as bytes and back,
and its commit to SQLite, which stores each page once however often it is delivered."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from crawler import results, wire
from crawler.http import PageResult, Request
from crawler.storage.collected import commit_collected
from crawler.storage.sqlite import Store, iter_items, open_readonly, read_summary
from crawler.urls import fingerprint

HOST = "a.test"


def received(request: Request, fp: bytes = b"") -> Request:
    """The request as the collector gets it: through the wire, led by its fingerprint or
    by `fp`, the id the Redis frontier gave a dont_filter request."""
    ident = fp or fingerprint(request.method, request.url, request.body)
    return wire.decode(wire.encode(request, HOST, ident), HOST)


def collected(page: PageResult, new: int = 0, fp: bytes = b"") -> PageResult:
    """`page` as a worker sends it and the collector decodes it."""
    return results.decode(results.encode(page), received(page.request, fp), new)


def done(n: int, items: int = 1, **kw: Any) -> PageResult:
    request = Request(f"http://{HOST}/p/{n}")
    found = [{"page": n, "i": i} for i in range(items)]
    return PageResult(request, status=200, url=request.url, size=100, items=found, **kw)


def test_a_page_survives_the_round_trip() -> None:
    request = Request(f"http://{HOST}/shop?page=2", depth=3)
    headers = CIMultiDict(
        [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    )
    page = PageResult(
        request, status=200, url=f"http://{HOST}/shop/2", size=2048, attempts=2,
        items=[{"name": "pen", "price": 3}, {"name": "ink"}], types=["Product", None],
        requests=[Request(f"http://{HOST}/x/{i}") for i in range(5)],
        dropped=Counter({"off-domain": 2, "MAX_DEPTH": 1}),
        dropped_items=[({"name": ""}, "no name"), ({"name": ""}, "no name"), ({}, "price < 0")],
        elapsed=0.25, headers=headers, etag='"v1"', last_modified="Tue, 01 Dec 2026 10:00:00 GMT",
    )  # fmt: skip
    back = collected(page, new=2)
    assert back.request == request
    assert back.request.fp == fingerprint("GET", request.url, None)
    assert (back.status, back.url, back.size, back.attempts) == (200, page.url, 2048, 2)
    assert back.items == page.items
    assert back.types == ["Product", None]
    assert back.requests == []  # the links live in Redis
    assert back.dropped == Counter({"off-domain": 2, "MAX_DEPTH": 1, "duplicate": 3})
    assert Counter(reason for _, reason in back.dropped_items or []) == Counter(
        {"no name": 2, "price < 0": 1}
    )
    assert back.headers is not None
    assert list(back.headers.items()) == list(headers.items())  # repeats kept, in order
    assert (back.elapsed, back.etag, back.last_modified) == (0.25, '"v1"', page.last_modified)
    assert not (back.skipped or back.redirected or back.not_modified)
    assert back.error is None and back.error_text is None


def test_a_plain_page_is_a_few_bytes() -> None:
    page = PageResult(Request(f"http://{HOST}/"), status=200, url=f"http://{HOST}/")
    assert results.encode(page) == b'{"status":200}'
    back = collected(page)
    assert (back.url, back.headers, back.dropped, back.dropped_items) == (
        page.url, None, Counter(), None,
    )  # fmt: skip


def test_a_failed_and_a_redirected_page_keep_their_outcome() -> None:
    failed = PageResult(
        Request(f"http://{HOST}/gone"), attempts=3, error="TimeoutError", error_text="after 5s"
    )
    back = collected(failed)
    assert (back.url, back.error, back.error_text, back.attempts) == (
        None, "TimeoutError", "after 5s", 3,
    )  # fmt: skip
    hop = Request(f"http://{HOST}/new")
    moved = PageResult(
        Request(f"http://{HOST}/old"), status=301, url=f"http://{HOST}/old", redirected=True,
        requests=[hop], headers={"Location": "/new"},
    )  # fmt: skip
    back = collected(moved, new=0)
    assert back.redirected
    assert back.headers == {"Location": "/new"}
    assert back.dropped == Counter({"redirect to a page already crawled": 1})


def test_a_dont_filter_request_keeps_the_id_redis_gave_it() -> None:
    page = PageResult(Request(f"http://{HOST}/again", dont_filter=True), status=200)
    fp = os.urandom(16)
    assert collected(page, fp=fp).request.fp == fp


async def test_items_are_stored_once_however_often_delivered(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    pages = [collected(done(n, items=2)) for n in range(3)]
    async with Store(db, "dist") as store:
        assert await commit_collected(store, pages) == 0
        assert await commit_collected(store, pages) == 3  # delivered again: nothing more
        assert await commit_collected(store, [collected(done(9)), pages[1]]) == 1
    with open_readonly(db) as conn:
        stored = list(iter_items(conn))
        assert len(stored) == 7
        assert Counter(item["page"] for item in stored) == {0: 2, 1: 2, 2: 2, 9: 1}
        assert read_summary(conn).pages_done == 4


async def test_a_page_twice_in_one_batch_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    page = done(1, items=3)
    async with Store(db, "dist") as store:
        assert await commit_collected(store, [collected(page), collected(page)]) == 1
    with open_readonly(db) as conn:
        assert len(list(iter_items(conn))) == 3
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1


async def test_a_restarted_collector_skips_what_the_last_one_stored(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    first, second = collected(done(1)), collected(done(2))
    async with Store(db, "dist") as store:
        assert await commit_collected(store, [first]) == 0
    async with Store(db, "dist") as store:  # its results were not acknowledged: read again
        assert await commit_collected(store, [first, second]) == 1
    with open_readonly(db) as conn:
        assert [item["page"] for item in iter_items(conn)] == [1, 2]
        keys = [key for (key,) in conn.execute("SELECT id FROM requests ORDER BY id")]
        assert len(set(keys)) == 2


async def test_dont_filter_pages_are_told_apart_by_their_id(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    page = done(1)
    page.request = page.request.replace(dont_filter=True)
    once, other = os.urandom(16), os.urandom(16)
    async with Store(db, "dist") as store:
        assert await commit_collected(store, [collected(page, fp=once)]) == 0
        assert await commit_collected(store, [collected(page, fp=once)]) == 1
        assert await commit_collected(store, [collected(page, fp=other)]) == 0
    with open_readonly(db) as conn:
        assert len(list(iter_items(conn))) == 2
        assert (
            conn.execute("SELECT COUNT(*) FROM requests WHERE dont_filter = 0").fetchone()[0] == 2
        )


async def test_the_summary_counts_what_was_collected(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    links = [Request(f"http://{HOST}/l/{i}") for i in range(4)]
    pages = [
        collected(done(1, items=2, requests=links, dropped=Counter({"off-domain": 1})), new=3),
        collected(
            done(2, items=1, dropped_items=[({}, "no price"), ({}, "no price"), ({}, "dup")]),
        ),
        collected(PageResult(Request(f"http://{HOST}/500"), status=500, error="500")),
        collected(
            PageResult(
                Request(f"http://{HOST}/old"), status=301, redirected=True, requests=links[:1]
            )
        ),
        collected(PageResult(Request(f"http://{HOST}/private"), error="robots.txt", skipped=True)),
    ]
    async with Store(db, "dist") as store:
        assert await commit_collected(store, pages) == 0
        assert await commit_collected(store, pages[:2]) == 2  # counted once, not twice
    with open_readonly(db) as conn:
        summary = read_summary(conn)
        links_from = conn.execute("SELECT COUNT(*) FROM requests WHERE links_from IS NOT NULL")
        parents = conn.execute("SELECT COUNT(*) FROM requests WHERE parent IS NOT NULL")
        assert links_from.fetchone()[0] == parents.fetchone()[0] == 0
        assert [item["page"] for item in iter_items(conn)] == [1, 1, 2]
    assert (summary.pages_done, summary.pages_failed) == (2, 1)
    assert (summary.pages_skipped, summary.pages_redirected, summary.pages_queued) == (1, 1, 0)
    assert summary.items == 3
    assert summary.dropped == {
        "off-domain": 1, "duplicate": 1, "redirect to a page already crawled": 1,
    }  # fmt: skip
    assert summary.items_dropped == {"no price": 2, "dup": 1}
    assert summary.errors == {"500": 1, "robots.txt": 1}
    assert summary.bytes == 200


async def test_a_batch_of_nothing_is_no_transaction(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db", "dist") as store:
        assert await commit_collected(store, []) == 0
        assert (await store.stats()).pages_done == 0
