"""A deterministic generated website on loopback, for `crawler bench`, benchmarks and tests.

Owns the page generator and its aiohttp server. Page n of `pages` lives at `/p/{n}.html`:
about 21 KB of HTML, a unique `<title>`, and 40 links to other pages written in mixed
forms (absolute paths, `17.html`, `./17.html`, `../p/17.html`, full URLs, `#fragments`,
exact duplicates). Page n links to 2n+1 and 2n+2, so from `/` (which links to page 0)
every page is reachable; prev/next links wrap around, so the graph has cycles.

Pages are rendered per request (about 25 µs each) rather than pre-rendered: 50,000
pages would hold 1 GB of bytes, and a bench crawl fetches each page once anyway.
The same (n, pages, seed, base) always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import random
import re
import struct
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import NamedTuple, Self

from aiohttp import web

from crawler.errors import UsageError

HITS = web.AppKey("HITS", Counter[str])
"""Requests served, by path (404s included)."""

_WORDS = """
    about above account across action active actual address advance affair agency agent
    almost always amount animal answer anyone appear apply approach area argue around
    arrive article artist assume attack author average avoid balance bank basis beauty
    become before begin behind believe benefit better between beyond border bottom branch
    bridge brother budget build burden button camera campaign capital career carry castle
    center chance change chapter charge choice church circle citizen claim class climate
    coast collect color column common company compare concern control corner country
    couple course cover credit culture current custom damage danger debate decade decide
    degree demand design detail device differ dinner direct doctor double dream driver
    early earth economy effect effort eight either energy engine enough entire escape
    evening event evidence exact example expect expert factor family father feature field
    figure final finger finish flight floor follow forest forget formal former forward
    friend future garden gather general gentle glass global golden ground growth guess
    habit harbor health heart heavy history honest horse hotel house human hunter image
    impact income indeed inside island itself journey judge junior kitchen labor ladder
    language later leader league letter level light limit listen little local manner
    market master matter measure member memory method middle minute mirror modern moment
    morning mother motion mountain music nation nature nearly needle network never normal
    notice number object office often orange order origin outside owner paper parent
    partner party pattern people period person picture pilot planet player pocket policy
    popular power pretty private problem process profit public purpose quality quarter
    question quiet rather reader reason record region remain report result return river
    rocket safety sample season second secret select senior series service settle shadow
    signal silver simple sister small social soldier source speech spring square stage
    station stone story street strong student studio style subject summer supply system
    table talent teacher theory thought throw ticket timber today tower travel treaty
    trouble truth twelve unit valley value village visit voice wander water weather window
    winter wonder worker writer yellow young
"""
_VOCABULARY = tuple(_WORDS.split())

_PAGE_PATH = re.compile(r"/p/(0|[1-9][0-9]{0,17})\.html")
_SECTIONS = 4
_PARAGRAPHS_PER_SECTION = 8
_LINKS = _SECTIONS * _PARAGRAPHS_PER_SECTION  # in the body; nav and footer add 8 more
_PICKS = 2 * _LINKS + _SECTIONS + 1  # pool indices: two a paragraph, headings, description
_POOL = 256  # cached text chunks and anchor phrases per seed, indexed by one byte
_CHUNK_CHARS = 272  # two chunks and a link a paragraph: ~21 KB a page
_NOISE = struct.Struct(f"<3HH{_PICKS}B{_LINKS}I")
_STYLE = (
    "body{font-family:Georgia,serif;margin:0 auto;max-width:46em;line-height:1.5}"
    "header,footer{background:#f4f4f4;padding:.5em 1em}nav a{margin-right:.6em}"
    "h1{font-size:1.8em}h2{font-size:1.3em;border-bottom:1px solid #ddd}"
    "p{margin:.6em 0}a{color:#1a0dab}footer{font-size:.85em;color:#555}"
)


def page_path(n: int) -> str:
    """The canonical URL path of page n."""
    return f"/p/{n}.html"


def index_title(pages: int) -> str:
    """The `<title>` of the start page `/`."""
    return f"Bench site – {pages} pages"


def expected_titles(pages: int, seed: int = 0) -> dict[str, str]:
    """Each page's canonical path ("/p/{n}.html") -> its title; `/` is not included."""
    return {page_path(n): _title(n, _noise(n, seed)) for n in range(pages)}


def page_html(n: int, pages: int, *, seed: int = 0, base: str = "") -> bytes:
    """The HTML of page n; `base` ("http://127.0.0.1:8123") prefixes the full-URL links,
    which are written as absolute paths when it is empty."""
    _check_page(n, pages)
    noise = _noise(n, seed)
    chunks, anchors = _pool(seed)
    picks = noise.picks
    body: list[str] = []
    for i, href in enumerate(_body_hrefs(n, pages, noise, base)):
        if i % _PARAGRAPHS_PER_SECTION == 0:
            section = i // _PARAGRAPHS_PER_SECTION
            heading = anchors[picks[2 * _LINKS + section]].capitalize()
            body.append(f'{"</section>" if i else ""}<section id="s{section}"><h2>{heading}</h2>')
        a, b = picks[2 * i], picks[2 * i + 1]
        body.append(f'<p>{chunks[a]} <a href="{href}">{anchors[b]}</a> {chunks[b]}</p>\n')
    body.append("</section>")
    description = chunks[picks[-1]][:150].rsplit(" ", 1)[0]
    return _document(n, pages, _title(n, noise), "".join(body), description)


def index_html(pages: int, *, seed: int = 0) -> bytes:
    """The start page `/`: links to the first pages (page 0 is the root of the link tree)."""
    _, anchors = _pool(seed)
    items = "".join(
        f'<li><a href="{"/" if m % 2 else ""}p/{m}.html">{anchors[m % _POOL]}</a></li>\n'
        for m in range(min(pages, 40))
    )
    title = index_title(pages)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<ul>\n{items}</ul>\n"
        "</body>\n</html>\n"
    ).encode()


def make_app(pages: int, *, seed: int = 0) -> web.Application:
    """The site as an aiohttp app: `/`, `/p/{n}.html`, `/robots.txt`; `app[HITS]` counts."""
    if pages < 1:
        raise UsageError(f"a bench site needs at least 1 page, not {pages}")
    index = index_html(pages, seed=seed)
    hits: Counter[str] = Counter()

    async def respond(request: web.Request) -> web.Response:
        path = request.path
        hits[path] += 1
        if path == "/":
            return web.Response(body=index, content_type="text/html", charset="utf-8")
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        n = _page_number(path, pages)
        if n is None:
            raise web.HTTPNotFound()
        base = html.escape(f"{request.scheme}://{request.host}")  # the Host header is input
        body = page_html(n, pages, seed=seed, base=base)
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    app = web.Application()
    app[HITS] = hits
    # one catch-all route: no router matching or middleware per request, and 404s are counted
    app.router.add_get("/{path:.*}", respond)
    return app


@dataclass(slots=True)
class BenchSite:
    """A running bench site; close it, or use it as an async context manager."""

    url: str
    pages: int
    hits: Counter[str]
    runner: web.AppRunner

    @property
    def requests(self) -> int:
        """Requests served so far, every path and status."""
        return self.hits.total()

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self.runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve(pages: int, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0) -> BenchSite:
    """Start the site on host:port (0 picks a free port) and return it running."""
    app = make_app(pages, seed=seed)
    runner = web.AppRunner(app, access_log=None)  # keep-alive stays on, aiohttp's default
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
    except BaseException:
        await runner.cleanup()
        raise
    netloc = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    return BenchSite(f"http://{netloc}/", pages, app[HITS], runner)


def _check_page(n: int, pages: int) -> None:
    if not 0 <= n < pages:
        raise ValueError(f"page {n} is not in 0..{pages - 1}")


def _page_number(path: str, pages: int) -> int | None:
    """n for "/p/{n}.html" with 0 <= n < pages, else None (also for "/p/007.html")."""
    match = _PAGE_PATH.fullmatch(path)
    n = int(match[1]) if match else pages
    return n if n < pages else None


class _Noise(NamedTuple):
    """A page's random numbers."""

    words: tuple[int, ...]  # the title's words, before % len(_VOCABULARY)
    turn: int  # rotates the body links against their forms
    picks: tuple[int, ...]  # indices into the pool: text chunks, anchors, headings
    targets: tuple[int, ...]  # random link targets, before % pages


def _noise(n: int, seed: int) -> _Noise:
    """Random numbers from a hash of (seed, n): the same on every platform and Python, and
    one call (random.Random costs 4 µs to seed and 0.3 µs a pick)."""
    values = _NOISE.unpack(hashlib.shake_128(b"%d:%d" % (seed, n)).digest(_NOISE.size))
    return _Noise(values[:3], values[3], values[4 : 4 + _PICKS], values[4 + _PICKS :])


def _title(n: int, noise: _Noise) -> str:
    first, *rest = (_VOCABULARY[i % len(_VOCABULARY)] for i in noise.words)
    return f"Page {n} – {first.capitalize()} {' '.join(rest)}"


def _forms(base: str) -> tuple[tuple[str, str], ...]:
    """(prefix, suffix) around "{m}.html": the ways a page spells a link to page m."""
    full = f"{base}/p/"
    return (
        ("/p/", ""),
        ("", ""),
        ("../p/", ""),
        (full, ""),
        ("/p/", "#s1"),
        ("./", ""),
        ("", "#s3"),
        (full, "#top"),
    )


def _body_hrefs(n: int, pages: int, noise: _Noise, base: str) -> list[str]:
    """_LINKS links: the tree children (one twice), next, previous, page 0 and random pages,
    each form equally often; a per-page rotation varies which target gets which form."""
    fixed = [2 * n + 1, 2 * n + 2, 2 * n + 1, (n + 1) % pages, (n - 1) % pages, 0]
    targets = [m for m in fixed if m < pages]
    targets += [t % pages for t in noise.targets[: _LINKS - len(targets)]]
    turn = noise.turn % _LINKS
    targets = targets[turn:] + targets[:turn]
    forms = _forms(base)
    return [
        f"{prefix}{m}.html{suffix}"
        for m, (prefix, suffix) in zip(targets, forms * (_LINKS // len(forms)), strict=True)
    ]


def _document(n: int, pages: int, title: str, body: str, description: str) -> bytes:
    """The page around its body; encoded in parts, as the title's dash would make the
    whole str two bytes a character and its encoding 25 times slower."""
    prev, after = page_path((n - 1) % pages), page_path((n + 1) % pages)
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        f'<meta name="description" content="{description}">\n'
        f"<style>{_STYLE}</style>\n</head>\n"
        '<body id="top">\n<header><nav><a href="/">Home</a>'
        f'<a href="/p/0.html">First</a><a href="{prev}">Previous</a>'
        f'<a href="{after}">Next</a><a href="{page_path(pages - 1)}">Last</a></nav></header>\n'
        f"<main><article>\n<h1>{title}</h1>\n"
    )
    foot = (
        f'\n</article></main>\n<footer><p>Page {n + 1} of {pages}. <a href="#top">Back to '
        f'top</a> <a href="{after}">Next page</a> <a href="/">Home</a></p></footer>\n'
        "</body>\n</html>\n"
    )
    return head.encode() + body.encode() + foot.encode()


@lru_cache(maxsize=8)
def _pool(seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """_POOL text chunks of about _CHUNK_CHARS characters, and _POOL anchor phrases."""
    rng = random.Random(seed)
    chunks = []
    for _ in range(_POOL):
        words = [rng.choice(_VOCABULARY).capitalize()]
        while sum(map(len, words)) + len(words) < _CHUNK_CHARS:
            words.append(rng.choice(_VOCABULARY))
        chunks.append(" ".join(words) + ".")
    anchors = tuple(" ".join(rng.choices(_VOCABULARY, k=rng.randint(2, 4))) for _ in range(_POOL))
    return tuple(chunks), anchors
