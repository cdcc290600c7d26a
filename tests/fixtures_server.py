"""Serving the saved sites of ../shared/fixtures on loopback, like `python -m http.server`.

A directory path without its trailing slash answers 301 to the path plus "/", a
directory answers with its index.html, a file with its content type guessed from its
extension, anything else 404 (directory listings are not served). Every request is
counted by path, so tests assert on how often the crawler fetched each page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

HITS = web.AppKey("hits", Counter[str])
STATUSES = web.AppKey("statuses", dict[str, int])
ROOT = web.AppKey("root", Path)


def fixture_dir(name: str) -> Path:
    """A folder of the shared fixtures; skips the calling test if it is absent."""
    folder = FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"fixture folder {folder} is absent")
    return folder


@dataclass
class StaticSite:
    """A folder served on 127.0.0.1, with the hits and the last status of every path."""

    server: TestServer
    hits: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, int] = field(default_factory=dict)

    def url(self, path: str = "/") -> str:
        """The absolute URL of a path on this server."""
        return str(self.server.make_url(path))


async def serve_static(aiohttp_server: AiohttpServer, root: Path) -> StaticSite:
    """Start serving `root` on a random loopback port."""
    app = static_app(root)
    server = await aiohttp_server(app)
    return StaticSite(server=server, hits=app[HITS], statuses=app[STATUSES])


def static_app(root: Path) -> web.Application:
    """An application that serves the files under `root` and counts the requests."""
    app = web.Application()
    app[ROOT] = root.resolve()
    app[HITS] = Counter()
    app[STATUSES] = {}
    app.router.add_get("/{tail:.*}", _serve)
    return app


async def _serve(request: web.Request) -> web.StreamResponse:
    request.app[HITS][request.path] += 1
    response = _answer(request.app[ROOT], request)
    request.app[STATUSES][request.path] = response.status
    return response


def _answer(root: Path, request: web.Request) -> web.StreamResponse:
    target = (root / request.path.lstrip("/")).resolve()
    if not target.is_relative_to(root):
        return web.Response(status=404, text="Not Found")
    if target.is_dir():
        if not request.path.endswith("/"):
            location = request.rel_url.raw_path + "/"
            if request.query_string:
                location += "?" + request.rel_url.raw_query_string
            return web.Response(status=301, headers={"Location": location})
        target = target / "index.html"
    elif request.path.endswith("/"):
        return web.Response(status=404, text="Not Found")  # http.server: a file is no folder
    if not target.is_file():
        return web.Response(status=404, text="Not Found")
    return web.FileResponse(target)  # content type guessed from the extension
