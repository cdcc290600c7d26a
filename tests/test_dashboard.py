"""`crawler serve` as a user sees it: a real crawl of the test site, the dashboard in a
subprocess, Debian's chromium opening it; the JSON API and the bad-input paths."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from browser import ARTEFACTS, browser, counts_of, number, served, status_of
from conftest import HOSTS, PAGES_PER_HOST, Site
from crawl_cli import run
from crawler.dashboard import queries
from crawler.engine import crawl
from crawler.storage.sqlite import Store
from dashboard_spider import DashboardSpider

SPIDER = Path(__file__).with_name("dashboard_spider.py")
SETTINGS = {"ROBOTS": False, "RETRIES": 1}
GRAPH_PAGES = len(HOSTS) * PAGES_PER_HOST


@pytest.fixture
async def crawled(site: Site, tmp_path: Path) -> AsyncIterator[Path]:
    """A finished crawl of the test site: 120 pages, a 500, a 404, a ValueError."""
    db = tmp_path / "dash.db"
    await crawl(DashboardSpider, db, {**SETTINGS, "START_URL": site.url("/g/0")})
    yield db


def shot(name: str) -> Path:
    ARTEFACTS.mkdir(exist_ok=True)
    return ARTEFACTS / f"{name}.png"


async def text(page: Any, selector: str) -> str:
    return str(await page.text_content(selector))


async def test_dashboard_shows_what_status_says(crawled: Path, tmp_path: Path) -> None:
    status = status_of(run("status", str(crawled)).stdout)
    errors = counts_of(status["errors by kind"])
    assert errors == {"404": 1, "500": 1, "ValueError in parse": 1}
    async with served(crawled) as url, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(url)
        assert await text(page, "#fact-state") == "finished"
        for fact in ("done", "queued", "failed", "skipped", "items", "retries"):
            assert number(await text(page, f"#fact-{fact}")) == int(status[fact]), fact
        assert await page.locator("#rate-chart").count() == 1
        await page.screenshot(path=shot("crawl"), full_page=True)

        await page.click("nav >> text=Hosts")
        await page.wait_for_url("**/hosts")
        rows = page.locator("#hosts tbody tr")
        assert await rows.count() == len(HOSTS)
        done = [number(await rows.nth(i).locator("td").nth(1).text_content()) for i in range(3)]
        assert sum(done) == int(status["done"])
        assert done == sorted(done, reverse=True)  # sorted by pages done, most first
        await page.click("#hosts >> text=host")  # sort by name instead
        await page.wait_for_url("**/hosts?sort=host&order=asc")
        first = await rows.nth(0).locator("td").nth(0).text_content()
        assert first is not None and first.startswith("127.0.0.1:")
        await page.screenshot(path=shot("hosts"), full_page=True)

        await page.click("nav >> text=Errors")
        await page.wait_for_url("**/errors")
        kinds = page.locator("#errors tbody tr")
        shown = {}
        for i in range(await kinds.count()):
            cells = kinds.nth(i).locator("td")
            shown[str(await cells.nth(0).text_content())] = number(
                await cells.nth(1).text_content()
            )
        assert shown == errors
        await page.screenshot(path=shot("errors"), full_page=True)
        await page.click("#errors >> text=500")
        await page.wait_for_url("**/errors?kind=500")
        failed = page.locator("#error-pages tbody tr")
        assert await failed.count() == 1
        assert "500" in await text(page, "#error-pages tbody tr td:nth-child(5)")
        await page.screenshot(path=shot("error-pages"), full_page=True)
        await failed.locator("td").nth(0).locator("a").click()  # the failed URL: its page
        await page.wait_for_selector("#page-facts")
        assert "/status/500" in await text(page, "#page-facts")
        await page.screenshot(path=shot("page-failed"), full_page=True)
        await page.click("#page-facts >> a")  # "found on": the page that linked to it
        await page.wait_for_selector("#links")
        assert (await text(page, "#page-facts")).count("/g/0") >= 1
        assert "/status/500" in await text(page, "#links")
        assert "Items (1)" in await text(page, "main")
        await page.screenshot(path=shot("page"), full_page=True)

        await page.click("nav >> text=Items")
        await page.wait_for_url("**/items")
        assert await page.locator("#items tbody tr").count() == 50  # a page of 50
        await page.screenshot(path=shot("items"), full_page=True)
        async with page.expect_download() as info:
            await page.click("#download-csv")
        download = await info.value
        await download.save_as(tmp_path / "items.csv")
        await page.click("text=next →")
        await page.wait_for_url("**/items?after=*")
        assert await page.locator("#items tbody tr").count() == 50
        await page.fill("input[name=q]", "127.0.0.2 1")  # titles "127.0.0.2 1", "... 10"-"19"
        await page.click("button[type=submit]")
        await page.wait_for_url("**/items?q=*")
        assert await page.locator("#items tbody tr").count() == 11
    exported = run("export", str(crawled), "--format", "csv").stdout
    assert (tmp_path / "items.csv").read_text(encoding="utf-8") == exported


async def test_live_view_counts_rise_while_a_crawl_runs(site: Site, tmp_path: Path) -> None:
    site.page_delay = 0.3  # with PER_HOST=1: ~10 pages/s, about 12 s for the crawl
    db = tmp_path / "live.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", "crawl", str(SPIDER), "--db", str(db), "-q",
        "-s", "ROBOTS=0", "-s", "RETRIES=1", "-s", "PER_HOST=1",
        "-s", f"START_URL={site.url('/g/0')}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):  # until the crawl has committed a page and says it runs
            if proc.returncode is None and _run_state(db) == "running" and _done(db) > 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(
                f"the crawl did not start: {proc.returncode} {await _stderr(proc)}"
            )
        async with served(db) as url, browser(tmp_path / "profile") as context:
            page = await context.new_page()
            await page.goto(url)
            assert await text(page, "#fact-state") == "running"
            first = number(await text(page, "#fact-done"))
            assert first < GRAPH_PAGES
            await page.screenshot(path=shot("live"), full_page=True)
            seen = [first]
            for _ in range(240):  # the page refreshes itself: no reload here
                await asyncio.sleep(0.25)
                seen.append(number(await text(page, "#fact-done")))
                if await text(page, "#fact-state") == "finished":
                    break
            assert seen[-1] > first, seen
            assert seen == sorted(seen)
            assert await proc.wait() == 0
            for _ in range(120):  # the last refresh after the end shows it finished
                if await text(page, "#fact-state") == "finished":
                    break
                await asyncio.sleep(0.25)
            assert await text(page, "#fact-state") == "finished"
            status = status_of((await asyncio.to_thread(run, "status", str(db))).stdout)
            assert number(await text(page, "#fact-done")) == int(status["done"])
            assert int(status["done"]) + int(status["failed"]) == GRAPH_PAGES + 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None or proc.stderr is None:
        return ""
    return (await proc.stderr.read()).decode()


def _run_state(db: Path) -> str | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT value FROM crawl WHERE key = 'run_state'").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _done(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM requests WHERE state = 1").fetchone()[0])


async def test_api_answers_what_status_says(crawled: Path) -> None:
    status = status_of(run("status", str(crawled)).stdout)
    async with served(crawled) as url, aiohttp.ClientSession(url) as http:
        async with http.get("/api/summary") as response:
            summary = await response.json()
        for fact in ("done", "queued", "failed", "skipped", "items", "retries", "bytes"):
            assert summary[fact] == int(status[fact]), fact
        async with http.get("/api/errors") as response:
            kinds = {k["kind"]: k["count"] for k in await response.json()}
        assert kinds == counts_of(status["errors by kind"])
        async with http.get("/api/errors/pages", params={"kind": "ValueError in parse"}) as r:
            (broken,) = (await r.json())["pages"]
        assert broken["url"].endswith("/g/7") and broken["error_text"] == "page seven is broken"
        async with http.get(f"/api/page/{broken['id']}") as response:
            found = await response.json()
        assert found["items"] and dict(found["headers"])["Content-Type"].startswith("text/html")
        assert found["parent"]["url"] and found["elapsed"] > 0
        async with http.get("/api/hosts", params={"sort": "host", "order": "asc"}) as response:
            hosts = await response.json()
        assert [h["host"].split(":")[0] for h in hosts] == list(HOSTS)
        assert all(h["p50"] is not None and h["p50"] <= h["p95"] for h in hosts)
        after, ids = 0, []
        for _ in range(10):  # paged by key to the end
            params = {"after": str(after), "limit": "50"}
            async with http.get("/api/items", params=params) as response:
                answer = await response.json()
            ids += [item["id"] for item in answer["items"]]
            if answer["next_after"] is None:
                break
            after = answer["next_after"]
        assert len(ids) == len(set(ids)) == int(status["items"])


@pytest.mark.parametrize(
    "path",
    [
        "/items?after=-1", "/items?after=x", "/items?after=99999999999999999999",
        "/hosts?sort=url;DROP TABLE items", "/hosts?order=sideways", "/items?q=" + "x" * 201,
        "/api/items?limit=0", "/api/items?limit=501", "/api/errors/pages", "/?debug=1",
        "/page/99999999999999999999",
    ],
)  # fmt: skip
async def test_bad_query_parameters_are_400(crawled: Path, aiohttp_client: Any, path: str) -> None:
    from crawler.dashboard.app import make_app

    client = await aiohttp_client(make_app(crawled))
    response = await client.get(path)
    assert response.status == 400
    assert len((await response.text()).strip().splitlines()) == 1
    assert (await client.get("/api/summary")).status == 200  # nothing was dropped


async def test_static_files_come_from_a_fixed_list(crawled: Path, aiohttp_client: Any) -> None:
    from crawler.dashboard.app import make_app

    client = await aiohttp_client(make_app(crawled))
    assert (await client.get("/static/style.css")).status == 200
    for path in ("/static/app.py", "/static/..%2f..%2fapp.py", "/static/%2e%2e/queries.py"):
        assert (await client.get(path)).status == 404


def test_serve_refuses_a_file_that_is_not_a_crawl_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    for path in (junk, empty, tmp_path / "missing.db"):
        result = run("serve", str(path), "--port", "0")
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout
    assert junk.read_bytes() == b"not a database at all"


async def test_serve_refuses_a_port_in_use(crawled: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.to_thread(run, "serve", str(crawled), "--port", str(port))
    finally:
        server.close()
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"crawler: serve: 127.0.0.1:{port} is in use; try another --port"
    )


async def test_a_database_from_before_the_dashboard_still_shows(crawled: Path) -> None:
    status = status_of(run("status", str(crawled)).stdout)
    with sqlite3.connect(crawled) as conn:  # as an older crawler left it
        for table in ("minutes", "hosts", "host_times", "live"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX items_page")
        for column in ("elapsed", "response_headers", "error_text", "links_from", "links_to"):
            conn.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    conn.close()
    with sqlite3.connect(f"file:{crawled}?mode=ro", uri=True) as ro:
        schema = queries.schema_of(ro)
        facts = queries.summary(ro, schema)
        assert (facts["done"], facts["failed"], facts["items"]) == (
            int(status["done"]), int(status["failed"]), int(status["items"]),
        )  # fmt: skip
        assert queries.hosts(ro, schema, running=False) == []
        found = queries.page(ro, schema, 1, 10)
        assert found is not None and found["links"]
    ro.close()
    async with Store(crawled, "dash"):  # a crawl opening it adds the tables, counted once
        pass
    with sqlite3.connect(f"file:{crawled}?mode=ro", uri=True) as ro:
        schema = queries.schema_of(ro)
        assert schema.counted
        facts = queries.summary(ro, schema)
        for fact in ("done", "failed", "skipped", "items", "retries", "bytes"):
            assert facts[fact] == int(status[fact]), fact
        hosts = queries.hosts(ro, schema, running=False)
        assert sum(h["done"] for h in hosts) == int(status["done"])
    ro.close()


async def test_a_rare_filter_reads_a_bounded_span_and_pages_on(
    crawled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "FILTER_SCAN", 7)  # items looked at per read
    with sqlite3.connect(f"file:{crawled}?mode=ro", uri=True) as ro:
        expected = [k for (k,) in ro.execute("SELECT id FROM items WHERE data LIKE '%/g/3%'")]
        after: int | None = 0
        found, reads = [], 0
        while after is not None and reads < 100:
            rows, after = queries.items(ro, "/g/3", after, 5)
            found += [row["id"] for row in rows]
            reads += 1
    ro.close()
    assert found == expected and len(expected) > 5
    assert reads > len(expected) // 5 + 1  # spans without a match were read, and passed


async def test_rate_counts_partial_minutes_by_their_seconds(tmp_path: Path) -> None:
    db = tmp_path / "rate.db"
    async with Store(db, "rate"):
        pass
    with sqlite3.connect(db) as conn:  # minute 100 from :30 on, minute 101 up to :15
        conn.execute("INSERT INTO minutes VALUES (100, 29, 1, 0, 29, 0, 0)")
        conn.execute("INSERT INTO minutes VALUES (101, 15, 0, 0, 15, 0, 0)")
        conn.execute("INSERT INTO minutes VALUES (103, 60, 3, 0, 60, 0, 0)")
    conn.close()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as ro:
        schema = queries.schema_of(ro)
        running = queries.rate(ro, schema, now=101 * 60 + 15, started=100 * 60 + 30)
        finished = queries.rate(ro, schema, started=100 * 60 + 30)
    ro.close()
    assert [p["pages_per_s"] for p in running[:2]] == [1.0, 1.0]
    assert running[0]["errors_per_min"] == 2.0
    assert [p["pages_per_s"] for p in finished] == [1.0, 0.25, 0.0, 1.05]  # a gap is a zero
