"""Fault servers for test_hostile.py: the hostile web, on loopback.

`serve_site()` runs one aiohttp.web site on 127.0.0.1, .2 and .3 (each its own port) whose
routes misbehave on purpose: robots.txt that fails or hangs, endless and compressed
bodies, pages in legacy charsets, binary bodies, redirect chains and loops. Every request
is recorded (host, path, User-Agent, start time), so tests assert on what really reached
the server. `serve_raw()` runs a bare asyncio server for faults below HTTP: a server that
never answers, one that trickles a byte a second, one that resets the connection
mid-body. Every loop here is bounded in bytes and in time.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import cache

from aiohttp import web

from conftest import HOSTS, serve_on_hosts

CHUNK = 1 << 16
SERVE_LIMIT = 60.0  # seconds any one response may take at most, whatever the client does

# One paragraph per legacy charset, with the letters each charset's look-alikes get wrong.
SAMPLES = {
    "cp1251": "Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая "
    "электрификация южных губерний даст мощный толчок подъёму сельского хозяйства.",
    "shift_jis": "いろはにほへと ちりぬるを わかよたれそ つねならむ うゐのおくやま "
    "けふこえて あさきゆめみし ゑひもせす。日本語の文章を正しく読むことができますか。",
    "latin-1": "Voix ambiguë d'un coeur qui, au zéphyr, préfère les jattes de kiwis. "
    "Le coeur déçu mais l'âme plutôt naïve, Louys rêva de crapaüter en canoë au delà "
    "des îles, près du mälström où brûlent les novae. Müller aß süße Äpfel à Genève.",
}

PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"<a href='/page/in-pdf'>not a link</a>\x00\xff\xfe\x80\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff"
    b"\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
MALFORMED = (
    b"<html><head><title>broken</title><body><div><p>unclosed <b>bold <i>both</b></i>"
    b"</div></span></table><a href='/page/x'<<>><p>\x00nul</p><![CDATA[ <script>"
    b"document.write('<p>'</script><!-- a comment that never ends"
)
BINARY = bytes(range(256)) * 64
LONG_PATH = "/page/" + "a" * 10_000  # a 10,000-character URL, on our own host
BAD_HREFS = (
    "javascript:void(0)",
    "mailto:someone@example.com",
    "tel:+15555550100",
    "data:text/html,<p>hi</p>",
    "http://[::1",
    "http://",
    "http://127.0.0.1:99999/bad-port",
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as the server saw it."""

    host: str  # "127.0.0.1", without the port
    path: str  # path and query
    user_agent: str
    at: float  # event-loop time the handler started


@dataclass(slots=True)
class RobotsTxt:
    """What one host's /robots.txt does."""

    status: int = 404
    body: str = ""
    hang: bool = False  # accept the request and answer nothing for SERVE_LIMIT seconds
    redirect: bool = False  # answer with two redirects to /rules.txt, which serves `body`


@dataclass
class HostileSite:
    """The running servers and what they saw."""

    urls: dict[str, str] = field(default_factory=dict)  # host -> "http://host:port"
    hits: list[Hit] = field(default_factory=list)
    robots: dict[str, RobotsTxt] = field(default_factory=dict)  # host -> its robots.txt
    sent: dict[str, int] = field(default_factory=dict)  # path -> body bytes written
    _ended: dict[str, asyncio.Event] = field(default_factory=dict, repr=False)

    def url(self, path: str, host: str = HOSTS[0]) -> str:
        """The full URL of `path` on one of the hosts."""
        return self.urls[host] + path

    def hits_of(self, path: str, host: str = HOSTS[0]) -> int:
        """How many requests reached exactly `path` (with its query) on `host`."""
        return sum(1 for hit in self.hits if hit.host == host and hit.path == path)

    def hits_on(self, host: str) -> list[Hit]:
        """Every request that reached `host`, in order."""
        return [hit for hit in self.hits if hit.host == host]

    def ended(self, path: str) -> asyncio.Event:
        """Set once the streamed response to `path` has stopped writing."""
        return self._ended.setdefault(path, asyncio.Event())

    async def sent_to_end(self, path: str, within: float = 5.0) -> int:
        """Body bytes the response to `path` wrote, once its handler has ended."""
        await asyncio.wait_for(self.ended(path).wait(), within)
        return self.sent[path]

    def starts(self, host: str, prefix: str) -> list[float]:
        """When requests for paths starting with `prefix` reached `host`, in order."""
        return [hit.at for hit in self.hits if hit.host == host and hit.path.startswith(prefix)]


def page_html(name: str) -> str:
    """A small well-formed page whose title and paragraph are `name`."""
    return f"<html><head><title>{name}</title></head><body><p>{name}</p></body></html>"


def charset_page(encoding: str, declare: str) -> tuple[bytes, str]:
    """The sample of `encoding` as an HTML page, and its Content-Type.

    declare: "none" (no charset anywhere), "header-utf-8" and "meta-utf-8" (a wrong
    charset in the header or in <meta>), "bogus" (a charset name that does not exist).
    """
    meta = '<meta charset="utf-8">' if declare == "meta-utf-8" else ""
    html = f"<html><head>{meta}<title>sample</title></head><body><p>{SAMPLES[encoding]}</p>"
    html += "</body></html>"
    content_type = {
        "header-utf-8": "text/html; charset=utf-8",
        "bogus": "text/html; charset=x-no-such-charset",
    }.get(declare, "text/html")
    return html.encode(encoding), content_type


@cache
def gzip_bomb(size: int) -> bytes:
    """A gzip stream of `size` zero bytes (about size / 1000 bytes long)."""
    out = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(CHUNK)
    parts = [out.compress(block) for _ in range(size // CHUNK)]
    return b"".join([*parts, out.flush()])


def truncated(encoding: str) -> bytes:
    """A compressed page cut off in the middle of its stream."""
    body = (page_html("whole") * 400).encode()
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    return packed[: len(packed) // 2]


async def _stream(
    request: web.Request, site: HostileSite, limit: int, declared: int | None
) -> web.StreamResponse:
    """Write `limit` bytes of filler, or fewer if the client goes away first."""
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    if declared is not None:
        response.content_length = declared
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"<p>" + b"x" * (CHUNK - 3)
    sent = 0
    try:
        async with asyncio.timeout(SERVE_LIMIT):
            while sent < limit:
                await response.write(chunk)
                sent += len(chunk)
    except (ConnectionError, TimeoutError):
        pass  # the client hung up (as it should) or the time bound ran out
    finally:
        site.sent[request.path_qs] = sent
        site.ended(request.path_qs).set()
    return response


def _app(site: HostileSite) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0]
        at = asyncio.get_running_loop().time()
        site.hits.append(Hit(host, request.path_qs, request.headers.get("User-Agent", ""), at))
        return await handler(request)

    async def robots(request: web.Request) -> web.Response:
        rules = site.robots.get(request.host.rsplit(":", 1)[0], RobotsTxt())
        if rules.hang:
            await asyncio.sleep(SERVE_LIMIT)
        if rules.redirect:
            raise web.HTTPFound("/redirect?to=/rules.txt")  # two hops
        return web.Response(status=rules.status, text=rules.body)

    async def moved_robots(request: web.Request) -> web.Response:
        return web.Response(text=site.robots[request.host.rsplit(":", 1)[0]].body)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=page_html(request.match_info["name"]), content_type="text/html")

    async def endless(request: web.Request) -> web.StreamResponse:
        return await _stream(request, site, int(request.query.get("limit", 200 << 20)), None)

    async def declared(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", 1 << 30))
        return await _stream(request, site, size, size)

    async def bomb(request: web.Request) -> web.Response:
        body = gzip_bomb(int(request.query.get("size", 256 << 20)))
        headers = {"Content-Type": "text/html", "Content-Encoding": "gzip"}
        return web.Response(body=body, headers=headers)

    async def charset(request: web.Request) -> web.Response:
        body, content_type = charset_page(
            request.match_info["encoding"], request.query.get("declare", "none")
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    odd = {
        "malformed": (MALFORMED, "text/html"),
        "empty": (b"", "text/html"),
        "binary": (BINARY, "text/html"),
        "pdf": (PDF, "application/pdf"),
        "png": (PNG, "image/png"),
    }

    async def odd_body(request: web.Request) -> web.Response:
        body, content_type = odd[request.match_info["kind"]]
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def links(request: web.Request) -> web.Response:
        hrefs = [*BAD_HREFS, f"http://{request.host}{LONG_PATH}"]
        anchors = "".join(f'<a href="{href}">bad</a>' for href in hrefs)
        html = f"<html><head><title>links</title></head><body>{anchors}"
        html += '<a href="/page/good">good</a></body></html>'
        return web.Response(text=html, content_type="text/html")

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text=page_html("end of chain"), content_type="text/html")
        raise web.HTTPFound(f"/chain/{n - 1}")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop/{1 - int(request.match_info['n'])}")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def broken_encoding(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        headers = {"Content-Type": "text/html", "Content-Encoding": encoding}
        return web.Response(body=truncated(encoding), headers=headers)

    app = web.Application(middlewares=[record])
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/rules.txt", moved_robots)
    app.router.add_get("/page/{name}", page)
    app.router.add_get("/private/{name}", page)
    app.router.add_get("/endless", endless)
    app.router.add_get("/declared", declared)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/charset/{encoding}", charset)
    app.router.add_get("/odd/{kind}", odd_body)
    app.router.add_get("/links", links)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/loop/{n}", loop)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/truncated/{encoding}", broken_encoding)
    return app


@asynccontextmanager
async def serve_site() -> AsyncIterator[HostileSite]:
    """The hostile site, served on every host of HOSTS."""
    site = HostileSite()
    async with serve_on_hosts(_app(site), site.urls):
        yield site


# -- below HTTP: a bare asyncio server ---------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n"


@dataclass
class RawServer:
    """A bare TCP server that answers every request the same (broken) way."""

    url: str = ""
    requests: int = 0  # request heads received: one per try
    lasted: list[float] = field(default_factory=list)  # seconds from request to hang-up


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read the request, answer nothing; return when the client hangs up."""
    await _hung_up(reader, SERVE_LIMIT)


async def trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the head at once, then the body one byte a second."""
    writer.write(HEAD % 1000)
    await _trickle(reader, writer, b"x" * 1000)


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send even the status line one byte a second."""
    await _trickle(reader, writer, HEAD % 4 + b"late")


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        if await _hung_up(reader, 1.0):
            return


async def _hung_up(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the client closed the connection within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            await reader.read(1)  # b"" at EOF; a client says nothing more after its request
    except TimeoutError:
        return False
    return True


async def reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promise 100,000 bytes, send 1,000, then reset the connection (RST, not FIN)."""
    writer.write(HEAD % 100_000 + b"<p>" + b"x" * 997)
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def serve_raw(behaviour: Behaviour) -> AsyncIterator[RawServer]:
    """A raw server on 127.0.0.1 that meets every request with `behaviour`."""
    state = RawServer()
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            async with asyncio.timeout(SERVE_LIMIT):
                while await reader.readuntil(b"\r\n\r\n"):  # one request head per try
                    state.requests += 1
                    started = loop.time()
                    try:
                        await behaviour(reader, writer)
                    finally:
                        state.lasted.append(loop.time() - started)
                    if writer.transport.is_closing():
                        break
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            tasks.discard(task)

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/raw"
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1)
