"""The spider author's loop, as a user runs it: cache, fetch, parse, new, progress."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pty
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import HOSTS, PAGES_PER_HOST, Site
from crawl_cli import crawler
from crawler import DropItem, Request

SPIDER = Path(__file__).with_name("graph_spider.py")
ALL_PAGES = len(HOSTS) * PAGES_PER_HOST


def databases_in(folder: Path) -> list[Path]:
    return list(folder.glob("*.db"))


def graph_hits(site: Site) -> int:
    return sum(v for k, v in site.hits.items() if "/g/" in k)


async def test_a_second_run_with_the_cache_never_touches_the_network(
    site: Site, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.sqlite"
    start = f"START_URL={site.url('/g/0')}"
    code, out, err = await crawler(
        "crawl", str(SPIDER), "--db", str(tmp_path / "one.db"), "--cache", str(cache),
        "-s", start, "-s", "ROBOTS=true", "-q",
    )  # fmt: skip
    assert code == 0, err
    assert graph_hits(site) == ALL_PAGES
    before = site.hits.total()

    # A new crawl database, the same cache, and a DELAY that would take minutes live.
    code, out, err = await crawler(
        "crawl", str(SPIDER), "--db", str(tmp_path / "two.db"), "-s", f"CACHE={cache}",
        "-s", start, "-s", "DELAY=5", "-s", "PER_HOST=1",
    )  # fmt: skip
    assert code == 0, err
    assert site.hits.total() == before  # robots.txt included
    assert f"done: {ALL_PAGES}" in out and f"items: {ALL_PAGES}" in out

    code, out, err = await crawler("cache", "clear", str(cache))
    assert code == 0 and f"{ALL_PAGES + len(HOSTS)} responses removed" in out
    code, out, err = await crawler(
        "crawl", str(SPIDER), "--db", str(tmp_path / "three.db"), "--cache", str(cache),
        "-s", start, "-s", "MAX_PAGES=5", "-q",
    )  # fmt: skip
    assert code == 0 and site.hits.total() > before  # an empty cache fetches again


async def test_a_cache_file_that_is_not_sqlite_is_refused_and_left_alone(
    site: Site, tmp_path: Path
) -> None:
    cache = tmp_path / "notes.txt"
    cache.write_text("not a cache\n")
    for args in (
        ["crawl", str(SPIDER), "--cache", str(cache), "-s", f"START_URL={site.url('/g/0')}"],
        ["cache", "clear", str(cache)],
    ):
        code, _, err = await crawler(*args, cwd=tmp_path)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "not a SQLite" in err, err
    assert cache.read_text() == "not a cache\n"
    assert not databases_in(tmp_path)
    assert site.hits.total() == 0


async def test_fetch_prints_the_body_or_the_headers(site: Site) -> None:
    code, out, err = await crawler("fetch", site.url("/g/3"), "-s", "USER_AGENT=looker/1")
    assert code == 0, err
    assert "<title>127.0.0.1 3</title>" in out
    assert site.user_agents == {"looker/1"}

    code, out, err = await crawler("fetch", site.url("/g/3"), "--headers")
    assert out.splitlines()[0] == f"200 {site.url('/g/3')}"
    assert any(line.lower().startswith("content-type: text/html") for line in out.splitlines())

    code, out, err = await crawler("fetch", site.url("/status/404"), "-s", "ROBOTS=0")
    assert code == 1 and out == "no"
    code, out, err = await crawler("fetch", "not a url")
    assert code == 2 and len(err.strip().splitlines()) == 1


async def test_fetch_of_a_redirect_prints_the_page_it_ends_at(site: Site) -> None:
    start = site.url(f"/redirect?to={site.url('/redirect?to=/g/3')}")
    code, out, err = await crawler("fetch", start)
    assert code == 0, err
    assert "<title>127.0.0.1 3</title>" in out
    assert site.hits_of("/g/3") == 1 and site.hits_of("/robots.txt") == 1

    code, out, err = await crawler("fetch", start, "--headers", "-s", "ROBOTS=0")
    assert code == 0 and out.splitlines()[0] == f"200 {site.url('/g/3')}", out


async def test_parse_runs_a_callback_and_follows_to_a_depth(site: Site, tmp_path: Path) -> None:
    code, out, err = await crawler(
        "parse", site.url("/g/1"), "--spider", str(SPIDER), "-s", "ROBOTS=0"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"# {site.url('/g/1')} (200, depth 0): 1 items,")
    assert json.loads(lines[1]) == {"url": site.url("/g/1"), "title": "127.0.0.1 1"}
    assert f"-> GET {site.url('/g/3')} parse" in lines
    assert graph_hits(site) == 1

    db = tmp_path / "parsed.db"
    code, out, err = await crawler(
        "parse", site.url("/g/1"), "--spider", str(SPIDER), "--depth", "2", "--db", str(db),
        "-s", "ROBOTS=0",
    )  # fmt: skip
    assert code == 0, err
    pages = [line for line in out.splitlines() if line.startswith("# ")]
    with sqlite3.connect(db) as conn:
        done = conn.execute("SELECT COUNT(*) FROM requests WHERE state = 1").fetchone()[0]
        items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert len(pages) == done == items > 1

    code, out, err = await crawler("parse", site.url("/g/1"), "--spider", "no-such-spider")
    assert code == 2 and "unknown spider" in err
    code, out, err = await crawler(
        "parse", site.url("/g/1"), "--spider", str(SPIDER), "--callback", "nope"
    )
    assert code == 2 and "no method 'nope'" in err


async def test_new_writes_a_spider_that_runs_as_it_is(site: Site, tmp_path: Path) -> None:
    code, out, err = await crawler("new", "my_site", site.url("/g/0"), cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "my_site.py").exists()
    code, out, err = await crawler(
        "crawl", "my_site.py", "-s", "ROBOTS=0", "-s", "MAX_PAGES=10", cwd=tmp_path
    )
    assert code == 0, err
    assert "done: 10" in out and "items: 10" in out
    assert (tmp_path / "my_site.db").exists()
    # It shows where a pipeline and a middleware go, and both are in use.
    spec = importlib.util.spec_from_file_location("my_site_spider", tmp_path / "my_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = module.MySiteSpider.custom_settings
    assert settings["PIPELINES"] == [module.CleanTitles]
    assert settings["MIDDLEWARES"] == [module.AcceptEnglish]
    assert module.CleanTitles().process_item({"title": " a \n b "}, None) == {"title": "a b"}
    with pytest.raises(DropItem):
        module.CleanTitles().process_item({"title": None}, None)
    request = module.AcceptEnglish().process_request(Request(site.url("/g/0")))
    assert request.headers == {"Accept-Language": "en"}

    code, out, err = await crawler("new", "my_site", cwd=tmp_path)
    assert code == 2 and "exists" in err


async def test_progress_is_a_live_display_on_a_terminal_and_log_lines_elsewhere(
    site: Site, tmp_path: Path
) -> None:
    site.page_delay = 0.02
    args = [sys.executable, "-m", "crawler", "crawl", str(SPIDER), "-s", "ROBOTS=0",
            "-s", f"START_URL={site.url('/g/0')}", "-s", "CONCURRENCY=2",
            "-s", "PROGRESS_EVERY=0.3"]  # fmt: skip

    plain = await asyncio.create_subprocess_exec(
        *args, "--db", str(tmp_path / "plain.db"), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(plain.communicate(), 60)
    progress = [line for line in err.decode().splitlines() if "crawler.progress" in line]
    assert progress and all("pages (" in line and "queued" in line for line in progress)
    assert "\x1b" not in err.decode()

    main, secondary = pty.openpty()
    live = await asyncio.create_subprocess_exec(
        *args, "--db", str(tmp_path / "live.db"), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=secondary, env={**os.environ, "TERM": "xterm"},
    )  # fmt: skip
    os.close(secondary)
    screen = bytearray()
    loop = asyncio.get_running_loop()
    while True:  # ends when the child closes the terminal (bounded by its crawl)
        try:
            chunk = await asyncio.wait_for(loop.run_in_executor(None, os.read, main, 65536), 60)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    await live.wait()
    os.close(main)
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # redrawn in place
    assert "pages/s" in text and "queued" in text and "in flight" in text
    assert "crawler.progress" not in text  # the display, not log lines
    assert live.returncode == 0
