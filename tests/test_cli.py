"""The `crawler` command as a user runs it: real subprocesses, real signals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import HOSTS, PAGES_PER_HOST, Site
from crawl_cli import count_items, run, wait_for_items

SPIDER = Path(__file__).with_name("graph_spider.py")
ALL_PAGES = len(HOSTS) * PAGES_PER_HOST


async def start_crawl(db: Path, *settings: str) -> asyncio.subprocess.Process:
    args = ["crawl", str(SPIDER), "--db", str(db), "--log-level", "WARNING"]
    for setting in settings:
        args += ["-s", setting]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def assert_each_page_stored_once(db: Path, site: Site) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        urls = Counter(json.loads(d)["url"] for (d,) in conn.execute("SELECT data FROM items"))
    assert set(urls) == site.graph_urls()
    assert set(urls.values()) == {1}


async def test_resume_after_sigkill_stores_every_item_exactly_once(
    site: Site, tmp_path: Path
) -> None:
    site.page_delay = 0.05
    db = tmp_path / "graph.db"
    settings = (f"START_URL={site.url('/g/0')}", "ROBOTS=false", "CONCURRENCY=4", "PER_HOST=2")
    for kill_at in (15, 50):  # killed twice, at two depths of the crawl
        proc = await start_crawl(db, *settings)
        await wait_for_items(db, kill_at, proc)
        assert proc.returncode is None, "the crawl ended before it could be killed"
        proc.kill()
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert count_items(db) < ALL_PAGES
    proc = await start_crawl(db, *settings)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "failed: 0" in out.decode()
    assert_each_page_stored_once(db, site)
    # Pages fetched but not committed at a kill are fetched again; the others are not.
    # Uncommitted at most: 4 in flight, 4 in the fetched queue, 1 parsing, and a batch.
    assert sum(v for k, v in site.hits.items() if "/g/" in k) <= ALL_PAGES + 2 * 16


async def test_ctrl_c_stops_cleanly_and_the_crawl_resumes(site: Site, tmp_path: Path) -> None:
    site.page_delay = 0.05
    db = tmp_path / "graph.db"
    settings = (f"START_URL={site.url('/g/0')}", "ROBOTS=false", "CONCURRENCY=4")
    proc = await start_crawl(db, *settings)
    await wait_for_items(db, 10, proc)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130, err.decode()
    assert "stopping" in err.decode() and "Traceback" not in err.decode()
    assert "unfinished" in out.decode()
    stored = count_items(db)
    assert 10 <= stored < ALL_PAGES

    proc = await start_crawl(db, *settings)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert_each_page_stored_once(db, site)


async def test_a_second_ctrl_c_exits_at_once_without_damage(site: Site, tmp_path: Path) -> None:
    site.page_delay = 0.05
    db = tmp_path / "graph.db"
    settings = (f"START_URL={site.url('/g/0')}", "ROBOTS=false", "CONCURRENCY=4")
    proc = await start_crawl(db, *settings)
    await wait_for_items(db, 10, proc)
    site.page_delay = 20  # pages in flight now would hold the first Ctrl-C for its grace
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 2.5)  # before the grace ends
    assert proc.returncode == 130, err.decode()
    assert "exiting now" in err.decode() and "Traceback" not in err.decode()

    site.page_delay = 0.05
    proc = await start_crawl(db, *settings)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert_each_page_stored_once(db, site)


async def test_status_and_export_show_what_the_crawl_stored(site: Site, tmp_path: Path) -> None:
    spider = tmp_path / "mixed.py"
    spider.write_text(
        "from crawler import Spider\n"
        "class Mixed(Spider):\n"
        "    name = 'mixed'\n"
        f"    start_urls = ['{site.url('/g/1')}', '{site.url('/status/500')}',\n"
        f"                  '{site.url('/status/404')}', '{site.url('/status/410')}']\n"
        "    def parse(self, response):\n"
        "        yield {'url': response.url, 'tags': ['a', 'b'], 'n': 1}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", "crawl", str(spider), "-s", "ROBOTS=0", "-s", "RETRIES=1",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    db = tmp_path / "mixed.db"

    status = await asyncio.to_thread(run, "status", str(db))
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert [line for line in lines if "failed" in line] == ["failed: 3"]
    assert "done: 1" in lines and "items: 1" in lines
    errors = next(line for line in lines if line.startswith("errors by kind"))
    assert "500: 1" in errors and "404: 1" in errors and "410: 1" in errors

    jsonl = await asyncio.to_thread(run, "export", str(db))
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == [
        {"url": site.url("/g/1"), "tags": ["a", "b"], "n": 1}
    ]
    exported = await asyncio.to_thread(
        run, "export", str(db), "--format", "csv", "-o", "items.csv", cwd=tmp_path
    )
    assert exported.returncode == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "items.csv").read_text())))
    assert rows == [["url", "tags", "n"], [site.url("/g/1"), '["a", "b"]', "1"]]


def test_bench_crawls_and_checks_the_generated_site() -> None:
    result = run("bench", "--pages", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "items: 301" in result.stdout
    assert "check: all 301 pages stored once, titles exact" in result.stdout
    assert "pages/s:" in result.stdout and "peak memory:" in result.stdout


def test_list_shows_the_bundled_spiders() -> None:
    listed = run("list")
    assert listed.returncode == 0
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"quotes", "books"} <= names


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["crawl", "no-such-spider"], ["unknown spider"]),
        (["crawl", "quotse"], ["did you mean 'quotes'"]),
        (["crawl", "quotes", "-s", "CONCURRENCY=abc"], ["CONCURRENCY", "whole number"]),
        (["crawl", "quotes", "-s", "CONCURENCY=4"], ["did you mean CONCURRENCY"]),
        (["crawl", "quotes", "-s", "TIMEOUT=-1"], ["TIMEOUT"]),
        (["crawl", "quotes", "-s", "NOEQUALS"], ["KEY=VALUE"]),
        (["crawl", "quotes", "--db", "/no/such/folder/q.db"], ["does not exist"]),
        (["status", "missing.db"], ["no such database"]),
        (["export", "missing.db"], ["no such database"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    one_line_error(run(*args, cwd=tmp_path), *words)


def test_a_file_that_is_not_a_database_is_left_unchanged(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_bytes(b"my precious notes\n" * 100)
    before = notes.read_bytes()
    for args in (
        ["status", str(notes)],
        ["export", str(notes)],
        ["crawl", "quotes", "--db", str(notes)],
    ):
        one_line_error(run(*args), "not a SQLite database")
    assert notes.read_bytes() == before


def test_a_database_of_another_spider_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE crawl (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO crawl VALUES ('spider', 'books')")
    one_line_error(run("crawl", "quotes", "--db", str(db)), "spider 'books'", "delete the file")


def test_a_spider_file_that_does_not_import_names_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from crawler import Spider\n\nx = 1 +\n")
    one_line_error(run("crawl", str(broken)), "broken.py", "line 3", "SyntaxError")
    raising = tmp_path / "raising.py"
    raising.write_text("from crawler import Spider\nimport no_such_module_here\n")
    one_line_error(run("crawl", str(raising)), "raising.py", "line 2", "ModuleNotFoundError")


def test_a_spider_without_name_or_start_urls_is_refused(tmp_path: Path) -> None:
    nameless = tmp_path / "nameless.py"
    nameless.write_text(
        "from crawler import Spider\nclass S(Spider):\n    start_urls = ['http://127.0.0.1:9/']\n"
    )
    one_line_error(run("crawl", str(nameless), "--db", str(tmp_path / "n.db")), "has no name")
    empty = tmp_path / "empty.py"
    empty.write_text("from crawler import Spider\nclass S(Spider):\n    name = 'empty'\n")
    one_line_error(run("crawl", str(empty), cwd=tmp_path), "no start URLs")
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from crawler import Spider\nclass S(Spider):\n    name = 'bad'\n    start_urls = ['ftp://x/']\n"
    )
    one_line_error(run("crawl", str(bad), cwd=tmp_path), "unsupported scheme")
    assert not list(tmp_path.glob("*.db"))  # refused before any database was made
