"""The dashboard's aiohttp.web application: HTML views, the JSON API, the downloads.

Each request opens its own read-only connection (`mode=ro`) in a worker thread, reads,
and closes it: a running crawl's writer is never blocked and the event loop never waits
on SQLite. Query parameters are checked here, each against its own rule (bounded ints,
sort keys from a list, text of bounded length); an unknown parameter or a bad value is
a 400 with one line. Static files are served from a fixed list of names.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from crawler.dashboard import queries, render
from crawler.errors import UsageError
from crawler.storage.export import write_csv, write_jsonl
from crawler.storage.sqlite import iter_items, open_readonly

T = TypeVar("T")
MAX_KEY = 2**63 - 1
PAGE_ROWS = 50  # rows a page of a table, by default
MAX_ROWS = 500  # rows at most in one API answer
MAX_TEXT = 200  # characters at most in a text parameter
STATIC = {"style.css": "text/css", "dashboard.js": "text/javascript"}
DB_KEY = web.AppKey("db", Path)


def make_app(db: Path) -> web.Application:
    """The dashboard of the crawl database `db` (checked by the caller)."""
    app = web.Application(middlewares=[_errors])
    app[DB_KEY] = db
    get = app.router.add_get
    get("/", overview)
    get("/hosts", hosts)
    get("/errors", errors)
    get("/items", items)
    get("/items.csv", download)
    get("/items.jsonl", download)
    get(r"/page/{key:\d{1,20}}", page)
    get("/static/{name}", static)
    get("/api/summary", api_summary)
    get("/api/rate", api_rate)
    get("/api/hosts", api_hosts)
    get("/api/errors", api_errors)
    get("/api/errors/pages", api_error_pages)
    get("/api/items", api_items)
    get(r"/api/page/{key:\d{1,20}}", api_page)
    return app


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """A database that cannot be read is a 503 with one line, not a traceback."""
    try:
        response: web.StreamResponse = await handler(request)
    except sqlite3.Error as exc:
        raise web.HTTPServiceUnavailable(text=f"cannot read the crawl database: {exc}\n") from exc
    return response


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA query_only = ON")
    return conn


async def _read(request: web.Request, read: Callable[[sqlite3.Connection, queries.Schema], T]) -> T:
    """Run `read` on a fresh read-only connection, in a worker thread."""
    db = request.app[DB_KEY]

    def run() -> T:
        with closing(_connect(db)) as conn:
            return read(conn, queries.schema_of(conn))

    return await asyncio.to_thread(run)


def _params(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown query parameter {unknown[0]!r}\n")


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise web.HTTPBadRequest(text=f"{name}: expected an integer from {low} to {high}\n")
    return int(raw)


def _text(request: web.Request, name: str) -> str:
    raw = request.query.get(name, "")
    if len(raw) > MAX_TEXT:
        raise web.HTTPBadRequest(text=f"{name}: at most {MAX_TEXT} characters\n")
    return raw


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name, default)
    if raw not in choices:
        raise web.HTTPBadRequest(text=f"{name}: expected one of {', '.join(choices)}\n")
    return raw


def _key(request: web.Request) -> int:
    key = int(request.match_info["key"])
    if key > MAX_KEY:
        raise web.HTTPBadRequest(text="page key out of range\n")
    return key


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _html(title: str, here: str, facts: dict[str, Any], body: str) -> web.Response:
    live = facts["state"] == "running"
    text = render.layout(title, facts["spider"], here, body, live=live)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _summary(conn: sqlite3.Connection, schema: queries.Schema) -> dict[str, Any]:
    return queries.summary(conn, schema, time.time())


def _overview(
    conn: sqlite3.Connection, schema: queries.Schema
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    now = time.time()
    facts = queries.summary(conn, schema, now)
    running = facts["state"] == "running"
    return facts, queries.rate(conn, schema, now if running else None, facts["started"])


# --- the HTML views ---


async def overview(request: web.Request) -> web.Response:
    """The crawl's facts and its rate chart."""
    _params(request, set())
    facts, points = await _read(request, _overview)
    return _html("Crawl", "/", facts, render.overview(facts, points))


def _host_order(request: web.Request) -> tuple[str, bool]:
    _params(request, {"sort", "order"})
    sort = _choice(request, "sort", queries.HOST_SORTS, "done")
    order = _choice(request, "order", ("asc", "desc"), "asc" if sort == "host" else "desc")
    return sort, order == "desc"


def _hosts_of(
    sort: str, desc: bool
) -> Callable[[sqlite3.Connection, queries.Schema], tuple[dict[str, Any], list[dict[str, Any]]]]:
    def read(c: sqlite3.Connection, s: queries.Schema) -> tuple[dict[str, Any], list[Any]]:
        facts = _summary(c, s)
        return facts, queries.hosts(c, s, facts["state"] == "running", sort, desc)

    return read


async def hosts(request: web.Request) -> web.Response:
    """One row a host, sortable by any column."""
    sort, desc = _host_order(request)
    facts, rows = await _read(request, _hosts_of(sort, desc))
    return _html("Hosts", "/hosts", facts, render.hosts(rows, sort, desc))


async def errors(request: web.Request) -> web.Response:
    """Errors by kind; with `kind`, the pages it hit, paged by key."""
    _params(request, {"kind", "after"})
    kind = _text(request, "kind")
    after = _int(request, "after", 0, 0, MAX_KEY)
    if not kind:
        facts, kinds = await _read(request, lambda c, s: (_summary(c, s), queries.error_kinds(c)))
        return _html("Errors", "/errors", facts, render.error_kinds(kinds))
    facts, (pages, next_after) = await _read(
        request,
        lambda c, s: (_summary(c, s), queries.error_pages(c, s, kind, after, PAGE_ROWS)),
    )
    body = render.error_pages(kind, pages, next_after)
    return _html(f"Errors: {kind}", "/errors", facts, body)


async def items(request: web.Request) -> web.Response:
    """The stored items, paged and filtered, with the download buttons."""
    _params(request, {"q", "after"})
    contains = _text(request, "q")
    after = _int(request, "after", 0, 0, MAX_KEY)
    facts, (found, next_after) = await _read(
        request,
        lambda c, s: (_summary(c, s), queries.items(c, contains, after, PAGE_ROWS)),
    )
    body = render.items(found, contains, next_after, facts["items"])
    return _html("Items", "/items", facts, body)


async def page(request: web.Request) -> web.Response:
    """One request and its page."""
    _params(request, set())
    key = _key(request)
    facts, found = await _read(
        request, lambda c, s: (_summary(c, s), queries.page(c, s, key, PAGE_ROWS))
    )
    if found is None:
        raise web.HTTPNotFound(text=f"no request {key} in this crawl\n")
    return _html(f"Page {key}", "", facts, render.page(found))


async def download(request: web.Request) -> web.StreamResponse:
    """Every item, as `crawler export` writes it (CSV or JSON lines)."""
    _params(request, set())
    form = request.path.rsplit(".", 1)[1]
    db = request.app[DB_KEY]
    spider = await _read(request, lambda c, s: queries.summary(c, s)["spider"])
    fd, name = tempfile.mkstemp(suffix="." + form)
    os.close(fd)
    path = Path(name)
    try:
        size = await asyncio.to_thread(_export, db, form, path)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv" if form == "csv" else "application/x-ndjson",
                "Content-Disposition": f'attachment; filename="{_safe(spider)}.{form}"',
            }
        )
        response.content_length = size
        await response.prepare(request)
        f = await asyncio.to_thread(path.open, "rb")
        with f:
            while chunk := await asyncio.to_thread(f.read, 1 << 16):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(path.unlink, True)


def _export(db: Path, form: str, path: Path) -> int:
    """Write every item to `path` as `crawler export` would; its size in bytes."""
    with closing(_connect(db)) as conn, path.open("w", encoding="utf-8", newline="") as out:
        if form == "csv":
            write_csv(lambda: iter_items(conn), out)
        else:
            write_jsonl(iter_items(conn), out)
    return path.stat().st_size


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "items"


async def static(request: web.Request) -> web.Response:
    """The stylesheet and the script, from the package (a fixed list of names)."""
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = files("crawler.dashboard").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name])


# --- the JSON API: the same data, for other tools ---


async def api_summary(request: web.Request) -> web.Response:
    """The crawl's facts."""
    _params(request, set())
    return _json(await _read(request, _summary))


async def api_rate(request: web.Request) -> web.Response:
    """Per minute: pages/s and failed pages."""
    _params(request, set())
    _, points = await _read(request, _overview)
    return _json(points)


async def api_hosts(request: web.Request) -> web.Response:
    """One object a host."""
    sort, desc = _host_order(request)
    _, rows = await _read(request, _hosts_of(sort, desc))
    return _json(rows)


async def api_errors(request: web.Request) -> web.Response:
    """Errors by kind, with counts."""
    _params(request, set())
    return _json(await _read(request, lambda c, s: queries.error_kinds(c)))


async def api_error_pages(request: web.Request) -> web.Response:
    """The pages one kind of error hit: `kind`, `after` (a key), `limit`."""
    _params(request, {"kind", "after", "limit"})
    kind = _text(request, "kind")
    if not kind:
        raise web.HTTPBadRequest(text="kind: required\n")
    after = _int(request, "after", 0, 0, MAX_KEY)
    limit = _int(request, "limit", PAGE_ROWS, 1, MAX_ROWS)
    pages, next_after = await _read(
        request, lambda c, s: queries.error_pages(c, s, kind, after, limit)
    )
    return _json({"pages": pages, "next_after": next_after})


async def api_items(request: web.Request) -> web.Response:
    """Items: `q` (text the item's JSON contains), `after` (a key), `limit`."""
    _params(request, {"q", "after", "limit"})
    contains = _text(request, "q")
    after = _int(request, "after", 0, 0, MAX_KEY)
    limit = _int(request, "limit", PAGE_ROWS, 1, MAX_ROWS)
    found, next_after = await _read(request, lambda c, s: queries.items(c, contains, after, limit))
    return _json({"items": found, "next_after": next_after})


async def api_page(request: web.Request) -> web.Response:
    """One request and its page."""
    _params(request, set())
    key = _key(request)
    found = await _read(request, lambda c, s: queries.page(c, s, key, MAX_ROWS))
    if found is None:
        raise web.HTTPNotFound(text=f"no request {key} in this crawl\n")
    return _json(found)


async def serve(db: Path, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve the dashboard of `db` until cancelled; `ready(url)` once it listens."""
    with closing(open_readonly(db)):  # UsageError unless it is a crawl database
        pass
    runner = web.AppRunner(make_app(db), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"serve: {host}:{port} is in use; try another --port") from None
            raise UsageError(f"serve: cannot listen on {host}:{port} ({exc.strerror})") from None
        addresses = runner.addresses  # the port the system chose, for --port 0
        bound = addresses[0][1] if addresses else port
        shown = f"[{host}]" if ":" in host else host
        ready(f"http://{shown}:{bound}/")
        await asyncio.Event().wait()  # until cancelled (Ctrl-C)
    finally:
        await runner.cleanup()
