"""FormRequest, FormRequest.from_response and Request(json=...): forms filled in as a
browser submits them, on pages as sites write them; and through a crawl, on loopback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web

from conftest import serve_on_hosts
from crawler import FormNotFound, FormRequest, Request, Response, Spider
from crawler.engine import crawl

PAGE = "http://shop.example/account/edit?tab=1"

EVERY_KIND = """<html><head><base href="http://shop.example/base/"></head><body>
<form id="search" action="/search"><input name="q" value="old"></form>
<form id="profile" name="profile" action="save?draft=0#top" method="POST">
  <input type="hidden" name="csrf" value="t0k3n">
  <input name="name" value="Ada"> <input type="email" name="mail">
  <input name="frozen" value="x" disabled>
  <input type="checkbox" name="news" checked> <input type="checkbox" name="ads" value="yes">
  <input type="checkbox" name="topics" value="a" checked><input type="checkbox" name="topics" value="b" checked>
  <input type="radio" name="size" value="s"><input type="radio" name="size" value="m" checked>
  <select name="country"><option value="fr">France</option><option value="de" selected>Germany</option></select>
  <select name="first"><option>Alpha</option><option>Beta</option></select>
  <select name="tags" multiple><option selected>x</option><option>y</option><option selected value="z1">z</option></select>
  <textarea name="bio">Hello,
world</textarea>
  <input type="file" name="photo"> <input type="reset" name="reset" value="Reset">
  <input type="button" name="js" value="Preview">
  <button type="button" name="helper" value="h">?</button>
  <input type="submit" name="op" value="Save"> <button name="op" value="Delete">Delete</button>
  <input type="image" name="map" value="M">
</form></body></html>"""  # noqa: E501


def page(html: str, url: str = PAGE, content_type: str = "text/html") -> Response:
    return Response(url, 200, {"Content-Type": content_type}, html.encode(), Request(url))


def fields(request: Request) -> list[tuple[str, str]]:
    if request.method == "POST":
        return parse_qsl((request.body or b"").decode(), keep_blank_values=True)
    return parse_qsl(urlsplit(request.url).query, keep_blank_values=True)


def test_from_response_sends_the_fields_a_browser_sends() -> None:
    request = FormRequest.from_response(page(EVERY_KIND), formcss="#profile")

    assert isinstance(request, FormRequest) and isinstance(request, Request)
    assert request.method == "POST"
    assert request.url == "http://shop.example/base/save?draft=0"  # against <base>, no fragment
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert fields(request) == [
        ("csrf", "t0k3n"),  # hidden: kept
        ("name", "Ada"),
        ("mail", ""),
        ("news", "on"),  # checked, no value: "on"
        ("topics", "a"),
        ("topics", "b"),
        ("size", "m"),  # the checked radio only
        ("country", "de"),  # the selected option
        ("first", "Alpha"),  # none selected: the first, by its text
        ("tags", "x"),
        ("tags", "z1"),
        ("bio", "Hello,\nworld"),
        ("op", "Save"),  # the first submit button, clicked
    ]


def test_formdata_overrides_extends_and_removes_fields() -> None:
    formdata = {"name": "Grace", "mail": None, "extra": ["1", "2"], "op": "Mine"}
    request = FormRequest.from_response(page(EVERY_KIND), formdata=formdata, formname="profile")

    sent = fields(request)
    assert ("name", "Grace") in sent and ("name", "Ada") not in sent
    assert "mail" not in dict(sent)
    assert sent[-4:] == [("name", "Grace"), ("extra", "1"), ("extra", "2"), ("op", "Mine")]
    assert [value for name, value in sent if name == "op"] == ["Mine"]  # no button's value


def test_clickdata_picks_the_button_and_dont_click_sends_none() -> None:
    response = page(EVERY_KIND)

    by_value = FormRequest.from_response(response, formid="profile", clickdata={"value": "Delete"})
    assert fields(by_value)[-1] == ("op", "Delete")
    by_number = FormRequest.from_response(response, formcss="#profile", clickdata={"nr": 2})
    assert fields(by_number)[-1] == ("map", "M")  # an image input is a submit button too
    none = FormRequest.from_response(response, formcss="#profile", dont_click=True)
    assert "op" not in dict(fields(none))
    with pytest.raises(ValueError, match="no submit button matches"):
        FormRequest.from_response(response, formcss="#profile", clickdata={"value": "Nope"})


def test_a_get_form_puts_its_fields_in_the_query_of_its_action() -> None:
    request = FormRequest.from_response(page(EVERY_KIND), formdata={"q": "lamps"})

    assert request.method == "GET" and request.body is None  # the first form, GET by default
    assert request.url == "http://shop.example/search?q=lamps"
    no_action = page('<form><input name="a" value="1"></form>', url=PAGE + "#frag")
    assert FormRequest.from_response(no_action).url == "http://shop.example/account/edit?a=1"


def test_formcss_finds_the_form_around_what_it_selects() -> None:
    html = '<form id="one"><input name="a"></form><form id="two"><p><input name="b"></p></form>'
    request = FormRequest.from_response(page(html), formcss="input[name=b]", formnumber=0)

    assert [name for name, _ in fields(request)] == ["b"]
    assert fields(FormRequest.from_response(page(html), formnumber=1)) == [("b", "")]


@pytest.mark.parametrize(
    ("html", "options", "message"),
    [
        ("<p>no form here</p>", {}, "no <form> on"),
        ('<form id="a"></form>', {"formcss": "#login"}, "no <form> matches '#login'"),
        ('<form id="a"></form>', {"formnumber": 2}, "no form number 2"),
        ('{"form": 1}', {}, "no <form> on"),
    ],
)
def test_a_form_that_is_not_there_is_a_clear_error(
    html: str, options: dict[str, Any], message: str
) -> None:
    content_type = "application/json" if html.startswith("{") else "text/html"
    with pytest.raises(FormNotFound, match=message):
        FormRequest.from_response(page(html, content_type=content_type), **options)


def test_form_request_posts_its_formdata_or_appends_it_to_a_get() -> None:
    post = FormRequest("http://a.example/login", formdata={"user": "ada", "pw": "x y"})
    assert (post.method, post.body) == ("POST", b"user=ada&pw=x+y")
    assert post.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    get = FormRequest("http://a.example/find?page=2", formdata=[("q", "é")], method="get")
    assert (get.method, get.url, get.body) == ("GET", "http://a.example/find?page=2&q=%C3%A9", None)
    typed = FormRequest("http://a.example/", formdata={"a": "1"}, headers={"content-type": "x/y"})
    assert typed.headers == {"content-type": "x/y"}
    assert typed.replace(url="http://a.example/2").body == b"a=1"
    assert FormRequest("http://a.example/").method == "GET"


def test_a_json_request_is_a_post_with_a_json_body() -> None:
    request = Request("http://a.example/api", json={"q": "lamp", "n": [1, 2]})
    assert request.method == "POST"
    assert json.loads(request.body or b"") == {"q": "lamp", "n": [1, 2]}
    assert request.headers == {"Content-Type": "application/json"}
    put = Request("http://a.example/api", method="PUT", json=[], headers={"X-A": "1"})
    assert (put.method, put.body, put.headers) == (
        "PUT", b"[]", {"X-A": "1", "Content-Type": "application/json"},
    )  # fmt: skip
    assert put.replace(url="http://a.example/b").body == b"[]"


# -- through a crawl -----------------------------------------------------------------------


@pytest.fixture
async def shop() -> AsyncIterator[dict[str, str]]:
    async def search_page(request: web.Request) -> web.Response:
        html = """<form action="/results?stale=1"><input name="q" value="chairs">
        <select name="sort"><option>price</option><option selected>name</option></select>
        <input type="submit" name="go" value="Search"></form>"""
        return web.Response(text=html, content_type="text/html")

    async def results(request: web.Request) -> web.Response:
        return web.json_response(dict(request.query))

    async def api(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"type": request.content_type, "got": body})

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="<p>no form</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/search", search_page)
    app.router.add_get("/results", results)
    app.router.add_post("/api", api)
    app.router.add_get("/plain", plain)
    urls: dict[str, str] = {}
    async with serve_on_hosts(app, urls):
        yield urls


class Shopper(Spider):
    name = "shopper"

    def start_requests(self) -> Iterator[Request]:
        base = self.start_urls[0]
        yield Request(base + "/search")
        yield Request(base + "/plain")
        yield Request(base + "/api", json={"basket": ["lamp"]}, callback=self.answer)

    def parse(self, response: Response) -> Iterator[Request]:
        yield FormRequest.from_response(response, formdata={"q": "lamps"}, callback=self.answer)

    def answer(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "answer": response.json()}


async def test_forms_and_json_through_a_crawl(shop: dict[str, str], tmp_path: Path) -> None:
    spider = Shopper()
    base = next(iter(shop.values()))
    spider.start_urls = [base]
    db = tmp_path / "shop.db"
    summary = await crawl(spider, db, {"ROBOTS": False})

    with sqlite3.connect(db) as conn:
        items = [json.loads(data) for (data,) in conn.execute("SELECT data FROM items")]
    answers = {item["url"].split("?")[0].removeprefix(base): item["answer"] for item in items}
    assert answers["/results"] == {"q": "lamps", "sort": "name", "go": "Search"}
    assert answers["/api"] == {"type": "application/json", "got": {"basket": ["lamp"]}}
    assert summary.errors == {"FormNotFound in parse": 1}  # /plain: the page's error kind


def test_from_response_takes_request_keywords() -> None:
    response = page(EVERY_KIND)
    request = FormRequest.from_response(
        response, formcss="#profile", url="http://shop.example/other", meta={"k": 1},
        dont_filter=True, headers={"X-A": "1"}, priority=3,
    )  # fmt: skip
    assert request.url == "http://shop.example/other" and request.method == "POST"
    assert request.meta == {"k": 1} and request.dont_filter and request.priority == 3
    assert request.headers == {"X-A": "1", "Content-Type": "application/x-www-form-urlencoded"}
