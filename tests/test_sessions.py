"""Sessions, cookies, default headers and HTTP auth, against a site on loopback that
behaves like a real one: a login form with a CSRF token, a session cookie, private pages
that send a visitor without the session back to /login."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_engine import OLD_REQUESTS_TABLE

from conftest import HOSTS, serve_on_hosts
from crawl_cli import count_items
from crawler import FormRequest, Request, Response, Spider
from crawler.cookies import Jars
from crawler.engine import crawl
from crawler.errors import UsageError
from crawler.settings import Settings
from crawler.urls import fingerprint
from login_spider import LoginSpider

LOGIN_SPIDER = Path(__file__).with_name("login_spider.py")
PASSWORDS = {"alice": "open sesame", "bob": "hunter2"}
PRIVATE_PAGES = 40
FAST = {"ROBOTS": False}


@dataclass
class Portal:
    """What the portal saw."""

    urls: dict[str, str] = field(default_factory=dict)  # host -> "http://host:port"
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> user
    logins: Counter[str] = field(default_factory=Counter)  # user -> successful logins
    bad_tokens: int = 0
    denied: Counter[str] = field(default_factory=Counter)  # path -> visits without a session
    private_hits: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # host, path, headers
    page_delay: float = 0.0

    def url(self, path: str, host: str = HOSTS[0]) -> str:
        return self.urls[host] + path

    def cookies_at(self, path: str, host: str = HOSTS[0]) -> list[str]:
        """The Cookie header of each request to `path` on `host` ("" when none was sent)."""
        netloc = self.urls[host].removeprefix("http://")
        return [h.get("Cookie", "") for n, p, h in self.seen if n == netloc and p == path]

    def headers_at(self, path: str, host: str = HOSTS[0]) -> list[dict[str, str]]:
        netloc = self.urls[host].removeprefix("http://")
        return [h for n, p, h in self.seen if n == netloc and p == path]


def _token(anonymous: str) -> str:
    return hashlib.sha256(b"portal-secret" + anonymous.encode()).hexdigest()[:16]


LOGIN_PAGE = """<html><body><h1>Log in</h1>{error}
<form id="search" action="/search"><input name="q"></form>
<form id="login" action="/login" method="post">
  <input type="hidden" name="csrf_token" value="{token}">
  <input name="username"> <input type="password" name="password">
  <input type="checkbox" name="remember" value="yes" checked>
  <input type="submit" name="action" value="login"> <input type="submit" name="action" value="help">
</form></body></html>"""


def portal_app(portal: Portal) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        portal.seen.append((request.host, request.path, dict(request.headers)))
        return await handler(request)  # type: ignore[no-any-return]

    async def login_page(request: web.Request) -> web.Response:
        anonymous = (
            request.cookies.get("anon")
            or hashlib.sha256(str(len(portal.seen)).encode()).hexdigest()[:12]
        )
        page = LOGIN_PAGE.format(error="", token=_token(anonymous))
        response = web.Response(text=page, content_type="text/html")
        response.set_cookie("anon", anonymous, path="/", httponly=True)
        return response

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        anonymous = request.cookies.get("anon", "")
        if not anonymous or form.get("csrf_token") != _token(anonymous):
            portal.bad_tokens += 1
            raise web.HTTPForbidden(text="bad CSRF token")
        user = str(form.get("username", ""))
        if form.get("action") != "login" or PASSWORDS.get(user) != form.get("password"):
            page = LOGIN_PAGE.format(error="<p>wrong</p>", token=_token(anonymous))
            return web.Response(text=page, content_type="text/html")
        portal.logins[user] += 1
        session = hashlib.sha256(f"{user}{len(portal.seen)}".encode()).hexdigest()[:16]
        portal.sessions[session] = user
        response = web.HTTPFound("/private/0")
        response.set_cookie("session", session, path="/", httponly=True)
        response.del_cookie("anon", path="/")  # Max-Age=0: the jar drops it
        raise response

    def user_of(request: web.Request) -> str | None:
        return portal.sessions.get(request.cookies.get("session", ""))

    async def private(request: web.Request) -> web.Response:
        user = user_of(request)
        if user is None:
            portal.denied[request.path] += 1
            raise web.HTTPFound("/login")
        portal.private_hits[request.path] += 1
        if portal.page_delay:
            await asyncio.sleep(portal.page_delay)
        n = int(request.match_info["n"])
        links = "".join(
            f'<a class="next" href="/private/{m}">{m}</a>'
            for m in (2 * n + 1, 2 * n + 2)
            if m < PRIVATE_PAGES
        )
        html = f'<h1>Private {n}</h1><p class="user">{user}</p>{links}'
        return web.Response(text=html, content_type="text/html")

    async def whoami(request: web.Request) -> web.Response:
        user = user_of(request)
        if user is None:
            raise web.HTTPForbidden(text="log in first")
        return web.Response(text=f"<p class='user'>{user}</p>", content_type="text/html")

    async def set_cookie(request: web.Request) -> web.Response:
        """Sets the cookies of the query: ?name=value&path=/a (path optional)."""
        response = web.Response(text="<p>set</p>", content_type="text/html")
        path = request.query.get("path")
        for name, value in request.query.items():
            if name in ("path", "status"):
                continue
            if value == "":
                response.del_cookie(name, path=path or "/")
            elif path:
                response.set_cookie(name, value, path=path)
            else:
                response.headers.add("Set-Cookie", f"{name}={value}")  # no Path: the default
        status = int(request.query.get("status", "200"))
        response.set_status(status)
        return response

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", ""), content_type="text/plain")

    async def robots(request: web.Request) -> web.Response:
        response = web.Response(text="User-agent: *\nAllow: /\n")
        response.set_cookie("from_robots", "1", path="/")
        return response

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def auth(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic dXNlcjpwYXNz":  # user:pass
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="x"'})
        return web.Response(text="<p>welcome</p>", content_type="text/html")

    async def json_echo(request: web.Request) -> web.Response:
        body = await request.json()
        reply = {"method": request.method, "type": request.content_type, "body": body}
        return web.json_response(reply)

    app = web.Application(middlewares=[record])
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_get("/private/{n}", private)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/set", set_cookie)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/auth", auth)
    app.router.add_post("/json", json_echo)
    app.router.add_put("/json", json_echo)
    app.router.add_get("/a/set", set_cookie)
    for path in ("/echo", "/a/echo", "/a/b/echo", "/b/echo"):
        app.router.add_get(path, echo)
    return app


@pytest.fixture
async def portal() -> AsyncIterator[Portal]:
    state = Portal()
    async with serve_on_hosts(portal_app(state), state.urls):
        yield state


def stored(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT data FROM items ORDER BY id")]


def private_urls(portal: Portal) -> set[str]:
    return {portal.url(f"/private/{n}") for n in range(PRIVATE_PAGES)}


# -- logging in ----------------------------------------------------------------------------


async def test_a_spider_logs_in_through_the_csrf_form_and_crawls_the_private_pages(
    portal: Portal, tmp_path: Path
) -> None:
    db = tmp_path / "login.db"
    summary = await crawl(LoginSpider, db, {"START_URL": portal.url("/login")})

    items = stored(db)
    assert {item["url"] for item in items} == private_urls(portal)
    assert len(items) == PRIVATE_PAGES and {item["user"] for item in items} == {"alice"}
    assert portal.logins == {"alice": 1} and portal.bad_tokens == 0
    assert not portal.denied and set(portal.private_hits.values()) == {1}
    assert summary.pages_redirected == 1 and summary.errors == {}
    # The form sent its hidden token, the checked box and the first submit button only.
    (posted,) = [h for h in portal.headers_at("/login") if h.get("Content-Type")]
    assert posted["Content-Type"] == "application/x-www-form-urlencoded"
    # The session cookie is saved with the crawl, the deleted anonymous one is not live.
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT name, expires IS NULL FROM cookies"))
    assert rows == {"session": 1, "anon": 0}


class TwoAccounts(Spider):
    """Logs in as each account in a session of its own (meta["cookiejar"])."""

    name = "accounts"

    def start_requests(self) -> Iterator[Request]:
        for user in PASSWORDS:
            yield Request(self.start_urls[0], meta={"cookiejar": user}, dont_filter=True)

    def parse(self, response: Response) -> FormRequest:
        user = response.meta["cookiejar"]
        return FormRequest.from_response(
            response,
            formcss="#login",
            formdata={"username": user, "password": PASSWORDS[user]},
            meta=response.meta,  # the same session: the jar keeps the CSRF's cookie
            dont_filter=True,  # both accounts land on /private/0: not a duplicate
            callback=self.logged_in,
        )

    def logged_in(self, response: Response) -> Iterator[Request]:
        whoami = response.urljoin("/whoami")
        yield Request(whoami, meta=response.meta, dont_filter=True, callback=self.me)

    def me(self, response: Response) -> Iterator[dict[str, Any]]:
        user = response.css_first(".user")
        yield {"session": response.meta["cookiejar"], "server says": user.text() if user else None}


async def test_two_accounts_in_one_crawl_keep_separate_sessions(
    portal: Portal, tmp_path: Path
) -> None:
    spider = TwoAccounts()
    spider.start_urls = [portal.url("/login")]
    db = tmp_path / "two.db"
    summary = await crawl(spider, db, FAST)

    assert summary.errors == {}
    assert sorted((i["session"], i["server says"]) for i in stored(db)) == [
        ("alice", "alice"),
        ("bob", "bob"),
    ]
    assert portal.logins == {"alice": 1, "bob": 1} and portal.bad_tokens == 0
    with sqlite3.connect(db) as conn:
        jars = {jar for (jar,) in conn.execute("SELECT jar FROM cookies WHERE name = 'session'")}
    assert jars == {'"alice"', '"bob"'}


# -- cookies as browsers keep them ---------------------------------------------------------


class Steps(Spider):
    """Fetches its requests one after the other (each from the previous one's callback)."""

    name = "steps"
    steps: list[Request] = []

    def start_requests(self) -> Iterator[Request]:
        yield self.steps[0].replace(callback=self.next, meta={**(self.steps[0].meta or {}), "i": 0})

    def next(self, response: Response) -> Iterator[Request | dict[str, Any]]:
        i = response.meta["i"]
        yield {"i": i, "url": response.url, "status": response.status}
        if i + 1 < len(self.steps):
            step = self.steps[i + 1]
            meta = {**(step.meta or {}), "i": i + 1}
            yield step.replace(callback=self.next, errback=self.failed, meta=meta)

    def echo(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "cookies": response.text}

    def failed(self, failure: Any) -> Iterator[Request | dict[str, Any]]:
        response = failure.response
        assert response is not None
        yield from self.next(response)


async def run_steps(
    tmp_path: Path, steps: list[Request], name: str = "s.db", **settings: Any
) -> Any:
    spider = Steps()
    spider.steps = steps
    return await crawl(spider, tmp_path / name, {**FAST, **settings})


async def test_cookies_follow_domain_and_path_rules(portal: Portal, tmp_path: Path) -> None:
    one, two = HOSTS[0], HOSTS[1]
    steps = [
        Request(portal.url("/a/set?deep=1")),  # no Path: the default path, /a
        Request(portal.url("/set?top=1&path=/")),
        Request(portal.url("/set?narrow=1&path=/a/b")),
        Request(portal.url("/set?status=404&failed=1")),  # an error answer's cookies count too
        Request(portal.url("/a/b/echo")),
        Request(portal.url("/a/echo")),
        Request(portal.url("/b/echo")),
        Request(portal.url("/echo", two)),  # another host: none of them
        Request(portal.url("/set?top=&path=/")),  # deleted (Max-Age=0)
        Request(portal.url("/a/echo"), dont_filter=True),
    ]
    await run_steps(tmp_path, steps)

    def names(header: str) -> set[str]:
        return {part.split("=")[0] for part in header.split("; ") if part}

    assert [names(h) for h in portal.cookies_at("/a/b/echo")] == [
        {"deep", "top", "narrow", "failed"}
    ]
    assert [names(h) for h in portal.cookies_at("/a/echo")] == [
        {"deep", "top", "failed"},
        {"deep", "failed"},
    ]
    assert [names(h) for h in portal.cookies_at("/b/echo")] == [{"top", "failed"}]
    assert portal.cookies_at("/echo", two) == [""]
    assert portal.cookies_at("/echo", one) == []


async def test_request_cookies_are_merged_unless_dont_merge_cookies(
    portal: Portal, tmp_path: Path
) -> None:
    steps = [
        Request(portal.url("/echo?1"), cookies={"currency": "USD"}),
        Request(portal.url("/echo?2")),  # the jar kept it
        Request(portal.url("/echo?3"), cookies={"only": "me"}, meta={"dont_merge_cookies": True}),
        Request(portal.url("/set?ignored=1"), meta={"dont_merge_cookies": True}),
        Request(portal.url("/echo?4"), cookies=[{"name": "lang", "value": "fr", "path": "/"}]),
        Request(portal.url("/echo?5"), headers={"Cookie": "mine=1"}),  # its own header wins
    ]
    await run_steps(tmp_path, steps)

    assert portal.cookies_at("/echo") == [
        "currency=USD",
        "currency=USD",
        "only=me",
        "currency=USD; lang=fr",
        "mine=1",
    ]
    assert portal.cookies_at("/set") == [""]  # dont_merge_cookies: the jar is not read


async def test_cookies_off_sends_none_and_keeps_none(portal: Portal, tmp_path: Path) -> None:
    steps = [
        Request(portal.url("/set?top=1&path=/")),
        Request(portal.url("/echo"), cookies={"given": "1"}),
        Request(portal.url("/echo?again")),
    ]
    db = "off.db"
    await run_steps(tmp_path, steps, db, COOKIES=False)

    assert portal.cookies_at("/echo") == ["", ""]
    with sqlite3.connect(tmp_path / db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cookies").fetchone() == (0,)


async def test_robots_txt_is_fetched_without_cookies_and_sets_none(
    portal: Portal, tmp_path: Path
) -> None:
    other = Portal()  # the same host on another port: its robots.txt is fetched later
    async with serve_on_hosts(portal_app(other), other.urls):
        steps = [
            Request(portal.url("/set?top=1&path=/")),
            Request(other.url("/echo")),  # host cookies are sent to every port, as browsers do
            Request(portal.url("/echo")),
        ]
        await run_steps(tmp_path, steps, ROBOTS=True)

    assert other.cookies_at("/robots.txt") == [""] and portal.cookies_at("/robots.txt") == [""]
    assert other.cookies_at("/echo") == ["top=1"]
    assert portal.cookies_at("/echo") == ["top=1"]  # robots.txt's cookie was not kept


class ResumedCookies(Spider):
    """Its first page queues a request with its own cookies, which the first run (MAX_PAGES=1)
    leaves for the second."""

    name = "resumed"

    def parse(self, response: Response) -> Iterator[Request]:
        meta = {"dont_merge_cookies": True}  # so only the stored request can carry them
        yield Request(response.urljoin("/echo"), cookies={"kept": "yes"}, meta=meta)
        yield Request(response.urljoin("/json"), json={"a": 1}, method="PUT")


async def test_request_cookies_survive_a_resume(portal: Portal, tmp_path: Path) -> None:
    spider = ResumedCookies()
    spider.start_urls = [portal.url("/login")]
    db = tmp_path / "r.db"
    first = await crawl(spider, db, {**FAST, "MAX_PAGES": 1})
    assert first.pages_queued == 2 and portal.cookies_at("/echo") == []

    again = ResumedCookies()
    again.start_urls = spider.start_urls
    second = await crawl(again, db, FAST)

    assert portal.cookies_at("/echo") == ["kept=yes"]
    (put,) = portal.headers_at("/json")  # method, body and headers came back as stored
    assert put["Content-Type"] == "application/json"
    assert second.pages_queued == 0 and second.errors == {}


# -- default headers and HTTP auth ---------------------------------------------------------


async def test_default_headers_are_sent_under_the_requests_own(
    portal: Portal, tmp_path: Path
) -> None:
    steps = [
        Request(portal.url("/echo?1")),
        Request(portal.url("/echo?2"), headers={"Accept-Language": "de"}),
    ]
    defaults = {"Accept-Language": "fr", "X-Team": "crawl"}
    await run_steps(tmp_path, steps, DEFAULT_HEADERS=json.dumps(defaults), USER_AGENT="ua/1")

    first, second = portal.headers_at("/echo")
    assert first["Accept-Language"] == "fr" and first["X-Team"] == "crawl"
    assert second["Accept-Language"] == "de" and second["X-Team"] == "crawl"
    assert first["User-Agent"] == second["User-Agent"] == "ua/1"


async def test_http_auth_goes_to_its_host_only_never_after_a_redirect_off_it(
    portal: Portal, tmp_path: Path
) -> None:
    one, two = HOSTS[0], HOSTS[1]
    steps = [
        Request(portal.url("/auth")),
        Request(portal.url(f"/redirect?to={portal.url('/echo', two)}")),
        Request(portal.url("/echo", two) + "?direct"),
    ]
    summary = await run_steps(tmp_path, steps, HTTP_AUTH={one: ("user", "pass")})

    assert summary.errors == {} and summary.pages_redirected == 1
    assert [h.get("Authorization") for h in portal.headers_at("/auth")] == ["Basic dXNlcjpwYXNz"]
    assert [h.get("Authorization") for h in portal.headers_at("/redirect")] == [
        "Basic dXNlcjpwYXNz"
    ]
    assert [h.get("Authorization") for h in portal.headers_at("/echo", two)] == [None, None]


async def test_http_auth_by_host_and_port(portal: Portal, tmp_path: Path) -> None:
    netloc = portal.urls[HOSTS[0]].removeprefix("http://")
    other_port = netloc.rsplit(":", 1)[0] + ":1"  # the same host, another port
    auth = json.dumps({other_port: ["user", "wrong"], netloc: ["user", "pass"]})
    summary = await run_steps(tmp_path, [Request(portal.url("/auth"))], HTTP_AUTH=auth)

    assert summary.errors == {} and summary.pages_done == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("HTTP_AUTH", "not json"),
        ("HTTP_AUTH", '{"host": "user:pass"}'),
        ("HTTP_AUTH", '{"host": ["user", 1]}'),
        ("HTTP_AUTH", ["host", "user", "pass"]),
        ("DEFAULT_HEADERS", '{"X-A": 1}'),
        ("DEFAULT_HEADERS", '["X-A"]'),
        ("DEFAULT_HEADERS", {"User-Agent": "x"}),
        ("COOKIES", "maybe"),
    ],
)
def test_bad_session_settings_are_refused(key: str, value: Any) -> None:
    with pytest.raises(UsageError, match=f"setting {key}"):
        Settings.build({key: value})


def test_a_bad_setting_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess

    args = ["crawl", str(LOGIN_SPIDER), "--db", str(tmp_path / "x.db")]
    done = subprocess.run(
        [sys.executable, "-m", "crawler", *args, "-s", 'HTTP_AUTH={"h": "u"}'],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "HTTP_AUTH" in done.stderr
    assert not (tmp_path / "x.db").exists()


# -- a crawl killed after its login ----------------------------------------------------------


async def test_a_crawl_killed_after_login_resumes_still_logged_in(
    portal: Portal, tmp_path: Path
) -> None:
    portal.page_delay = 0.05
    db = tmp_path / "login.db"
    args = [sys.executable, "-m", "crawler", "crawl", str(LOGIN_SPIDER), "--db", str(db),
            "--log-level", "WARNING", "-s", f"START_URL={portal.url('/login')}",
            "-s", "CONCURRENCY=2"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(600):  # 30 s at most
        if count_items(db) >= 8 or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.returncode is None, "the crawl ended before it could be killed"
    proc.kill()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 8 <= count_items(db) < PRIVATE_PAGES
    assert portal.logins == {"alice": 1}

    resumed = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(resumed.communicate(), 120)
    assert resumed.returncode == 0, err.decode()

    assert portal.logins == {"alice": 1}  # no second login: the session was saved
    assert not portal.denied  # and never turned away
    urls = Counter(item["url"] for item in stored(db))
    assert set(urls) == private_urls(portal) and set(urls.values()) == {1}


async def test_saved_cookies_come_back_with_their_scope_and_expiry() -> None:
    jars = Jars(record=True)
    page = Request("http://www.shop.example/cart/view", key=5)
    jars.receive(page, page.url, [
        "sid=1; Path=/",
        "cart=2",  # the default path: /cart
        "safe=3; Secure; Path=/",
        "old=4; Path=/; Expires=Wed, 21 Oct 2015 07:28:00 GMT",  # expired: deleted
        "wide=5; Domain=shop.example; Path=/",  # the whole domain
        "foreign=6; Domain=other.example",  # refused: not this host's domain
        "later=7; Path=/; Max-Age=3600",
    ])  # fmt: skip
    rows = jars.take(5)
    assert rows is not None and jars.take(5) is None
    assert {row.name for row in rows} == {"sid", "cart", "safe", "old", "wide", "later"}

    resumed = Jars()
    resumed.load(rows)

    def sent(url: str) -> set[str]:
        header = resumed.header(Request(url), first_try=True) or ""
        return {part.split("=")[0] for part in header.split("; ") if part}

    assert sent("http://www.shop.example/cart/x") == {"sid", "cart", "wide", "later"}
    assert sent("https://www.shop.example/") == {"sid", "safe", "wide", "later"}
    assert sent("http://img.shop.example/") == {"wide"}  # host-only cookies stay home
    assert sent("http://other.example/") == set()


async def test_a_database_of_an_earlier_schema_gets_the_cookie_column_and_table(
    portal: Portal, tmp_path: Path
) -> None:
    db = tmp_path / "old.db"
    queued = [portal.url("/set?top=1&path=/"), portal.url("/echo")]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(OLD_REQUESTS_TABLE)  # no cookies column, no cookies table
        conn.executemany(
            "INSERT INTO crawl VALUES (?, ?)",
            [("spider", Steps.name), ("schema", "1"), ("created", "0")],
        )
        conn.executemany(
            "INSERT INTO requests (id, fp, url, method, callback, priority, depth, dont_filter)"
            " VALUES (?, ?, ?, 'GET', 'echo', 0, 0, 0)",
            [(key, fingerprint("GET", url, None), url) for key, url in enumerate(queued, 1)],
        )
    summary = await run_steps(tmp_path, [Request(queued[0])], "old.db", CONCURRENCY=1)

    assert summary.pages_done == 2 and summary.errors == {}
    assert portal.cookies_at("/echo") == ["top=1"]
    with sqlite3.connect(db) as conn:
        assert ("top",) in conn.execute("SELECT name FROM cookies").fetchall()
        assert "cookies" in {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
