"""The shell (crawler.tools.shell) as a user drives it: `python -m crawler.tools.shell` with
its stdin piped, against a small site on 127.0.0.1. CRAWLER_SHELL=python: the plain console."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from crawler.settings import Settings
from crawler.tools.shell import run_shell

HOME = (
    "<html><head><title>home</title></head><body><h1>Hello</h1><a href='/two'>two</a></body></html>"
)
SPIDER = """
from crawler import Spider

class Titles(Spider):
    name = "titles"
    start_urls = ["http://titles.invalid/"]

    def parse(self, response):
        yield {"title": response.css_first("h1").text()}
        for link in response.css("a"):
            yield response.follow(link, callback=self.parse)
"""


@dataclass
class Site:
    """A two-page site and a 404, with hit counters."""

    base: str
    hits: Counter[str]


@dataclass
class Session:
    """What a shell run printed, and how it ended."""

    stdout: str
    stderr: str
    code: int


@pytest.fixture
async def site(aiohttp_server: AiohttpServer) -> Site:
    hits: Counter[str] = Counter()
    pages = {"/": HOME, "/two": "<h1>Two</h1>"}

    async def page(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if request.path not in pages:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    return Site(base=str(server.make_url("/")), hits=hits)


async def shell(*args: str, lines: list[str]) -> Session:
    """Run `crawler shell ARGS`, typing `lines` at its prompt."""
    env = {**os.environ, "CRAWLER_SHELL": "python", "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", "shell", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    typed = "".join(line + "\n" for line in lines).encode()
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate(typed)
    assert process.returncode is not None
    return Session(stdout.decode(), stderr.decode(), process.returncode)


def take_file(name: str) -> str:
    """A file's text; the file is removed."""
    path = Path(name)
    try:
        return path.read_text()
    finally:
        path.unlink()


async def test_response_fetch_view_and_top_level_await_work_at_the_prompt(site: Site) -> None:
    run = await shell(
        site.base,
        lines=[
            "print(response.status, response.css_first('h1').text())",
            "fetch('/two')",
            "print(response.css_first('h1').text())",
            "r = await fetch_async('/')",
            "print(r.status, response is r)",
            "view(response)",
            "exit()",
        ],
    )
    assert run.code == 0, run.stderr
    assert "200 Hello" in run.stdout
    assert f"response = <200 {site.base}two (12 bytes)>" in run.stdout
    assert "Two" in run.stdout
    assert "200 True" in run.stdout
    assert "Traceback" not in run.stderr
    assert site.hits["/"] == 2 and site.hits["/two"] == 1
    page = take_file(re.findall(r"\S+crawler-\S+\.html", run.stdout)[-1])
    assert page.startswith(f'<html><head><base href="{site.base}"><title>home</title>')
    assert "<h1>Hello</h1>" in page


async def test_bad_urls_and_failed_fetches_print_one_line_and_the_shell_goes_on(
    site: Site, refused_url: str
) -> None:
    run = await shell(
        "-s", "ROBOTS=false", "-s", "RETRIES=0",
        lines=[
            "print(response)",
            "fetch('not a url')",
            f"fetch('{refused_url}')",
            "print(response)",
            f"fetch('{site.base}missing')",
            "print(response.status)",
            "1/0",
            "print('still here')",
            "exit(3)",
        ],
    )  # fmt: skip
    assert run.code == 3
    assert run.stdout.count(">>> None\n") == 2  # no response before, none after the failures
    errors = run.stderr.splitlines()
    assert "cannot fetch 'not a url': unsupported scheme '(none)'" in errors
    assert [line for line in errors if line.startswith(f"cannot fetch {refused_url}: ")]
    assert f"response = <404 {site.base}missing (9 bytes)>" in run.stdout
    assert ">>> 404\n" in run.stdout
    assert run.stderr.count("Traceback") == 1 and "ZeroDivisionError" in run.stderr
    assert "still here" in run.stdout


async def test_parse_runs_the_spiders_callback_on_the_response(site: Site, tmp_path: Path) -> None:
    spider = tmp_path / "titles.py"
    spider.write_text(SPIDER)
    run = await shell(
        site.base, "--spider", str(spider),
        lines=[
            "parse()",
            "print(_.items, [r.url for r in _.requests])",
            "parse(callback='nope')",
            "print(spider.name)",
        ],
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "<PageResult: 1 item, 1 request>" in run.stdout
    assert f"[{{'title': 'Hello'}}] ['{site.base}two']" in run.stdout
    assert "spider 'titles' has no method 'nope'" in run.stderr
    assert "titles" in run.stdout


async def test_a_stream_given_as_stdin_drives_the_plain_console(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = io.StringIO("import asyncio\nawait asyncio.sleep(0)\nprint(response.status)\n")
    code = await asyncio.to_thread(run_shell, site.base, Settings.build({}), None, stdin=typed)
    out = capsys.readouterr().out
    assert code == 0
    assert f"response = <200 {site.base} (" in out
    assert ">>> 200\n" in out
