"""The collector's side of a distributed crawl: a worker's page result as bytes and back."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from multidict import CIMultiDict

from crawler import results, wire
from crawler.http import PageResult, Request
from crawler.urls import fingerprint

HOST = "a.test"


def received(request: Request, fp: bytes = b"") -> Request:
    """The request as the collector gets it: through the wire, with Redis's id if any."""
    return wire.decode(wire.encode(request, HOST), HOST).replace(fp=fp)


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
