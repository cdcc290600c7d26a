"""Requests as the Redis frontier stores them (compact, decoded to what was encoded); the
default crawl never imports the Redis frontier."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crawler import wire
from crawler.http import Callback, Request
from crawler.urls import fingerprint


class Spider:
    def parse(self) -> None: ...

    def failed(self) -> None: ...


SPIDER = Spider()


def resolve(name: str | None) -> Callback | None:
    return None if name is None else getattr(SPIDER, name)  # type: ignore[no-any-return]


def fp(request: Request) -> bytes:
    return fingerprint(request.method, request.url, request.body)


def test_a_typical_link_is_its_fingerprint_its_path_and_a_few_bytes() -> None:
    request = Request("http://a.test/shop/item-7?page=2", SPIDER.parse, depth=2)
    blob = wire.encode(request, "a.test", fp(request))
    assert blob == fp(request) + b'["/shop/item-7?page=2","parse",2]'
    decoded = wire.decode(blob, "a.test", resolve)
    assert decoded == request and decoded.fp == fp(request)


def test_every_field_survives_the_round_trip() -> None:
    request = Request(
        "https://b.test:8443/form", SPIDER.parse, "POST", {"X-Token": "t"}, b"\x00\xffbody",
        {"cookiejar": 1, "nested": {"k": [1, 2]}}, -3, True, SPIDER.failed, 4, 2,
    )  # fmt: skip
    blob = wire.encode(request, "b.test:8443", fp(request))
    assert blob[wire.IDENT :].startswith(b'["~/form"')
    assert wire.decode(blob, "b.test:8443", resolve) == request


def test_cookies_of_either_shape_survive_the_round_trip() -> None:
    for cookies in (
        {"session": "s1", "lang": "en"},
        [{"name": "session", "value": "s1", "domain": "a.test", "path": "/"}],
    ):
        request = Request("http://a.test/", SPIDER.parse, cookies=cookies)
        decoded = wire.decode(wire.encode(request, "a.test", fp(request)), "a.test", resolve)
        assert decoded == request and decoded.cookies == cookies
    bare = Request("http://a.test/")
    plain = wire.decode(wire.encode(bare, "a.test", fp(bare)), "a.test")
    assert plain.cookies is None


def test_a_dont_filter_request_keeps_its_uid_as_its_fp() -> None:
    uid = bytes(range(16))
    request = Request("http://a.test/again", dont_filter=True)
    decoded = wire.decode(wire.encode(request, "a.test", uid), "a.test")
    assert decoded == request and decoded.fp == uid


def test_an_identity_is_sixteen_bytes() -> None:
    request = Request("http://a.test/")
    for ident in (b"", b"short", bytes(17)):
        with pytest.raises(ValueError, match="16 bytes"):
            wire.encode(request, "a.test", ident)


def test_a_url_not_of_the_queue_host_is_kept_whole() -> None:
    for url, host in [
        ("http://A.test/x", "a.test"),  # not yet lower-cased
        ("http://a.test.evil/x", "a.test"),
        ("http://a.test:8080/x", "a.test"),
    ]:
        blob = wire.encode(Request(url), host, fp(Request(url)))
        assert wire.decode(blob, host).url == url


def test_without_a_resolver_callbacks_are_left_out() -> None:
    request = Request("http://a.test/", SPIDER.parse)
    blob = wire.encode(request, "a.test", fp(request))
    assert wire.decode(blob, "a.test").callback is None
    assert wire.decode(blob, "a.test").url == "http://a.test/"


def test_the_default_crawl_path_does_not_import_redis() -> None:
    code = (
        "import sys, crawler.cli, crawler.engine, crawler.frontier;"
        "print(sorted(m for m in sys.modules if m == 'redis' or 'redisfrontier' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
