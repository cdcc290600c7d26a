"""`crawler shell`: an interactive Python prompt on live pages, with top-level `await`.

An event loop runs in a thread of its own and holds a `crawler.tools.page.OnePage` open, so
every page is fetched through the crawl's own fetcher (one session, USER_AGENT,
robots.txt, retries, timeouts) and parsed by the crawl's own parser. The prompt runs in
the main thread, where Ctrl-C, readline and IPython's terminal work, and calls into the
loop with `run_coroutine_threadsafe`; Ctrl-C cancels what it waits for.

At the prompt:

    response                  the last page fetched (None before the first)
    fetch(url)                fetch a URL (relative ones against `response`) into `response`
    await fetch_async(url)    the same, returning the response
    view(response)            save a response's body to a temp .html file; print its path
    parse(response, "name")   run a spider callback on a response (default: its request's)
    spider, settings, Request

A statement with `await` in it runs as a coroutine on the loop, as in `python -m asyncio`.
IPython is used when it is installed (its autoawait runs `await` cells); set
`CRAWLER_SHELL=python` for the plain console. A bad URL or a failed fetch prints one line
and leaves `response` as it was.
"""

from __future__ import annotations

import ast
import asyncio
import code
import html
import importlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import threading
import types
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, TypeVar
from urllib.parse import urlsplit

from crawler.errors import FetchError, SpiderError
from crawler.http import PageResult, Request, Response
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.tools.page import OnePage
from crawler.urls import check_url

T = TypeVar("T")

ENV_VAR = "CRAWLER_SHELL"  # "python": the plain console even where IPython is installed
_HEAD = re.compile(rb"<head(\s[^>]*)?>", re.I)

BANNER = """\
crawler shell: Python {version} with top-level await
  response                  {response}
  fetch(url)                fetch a page (relative URLs against response) into `response`
  await fetch_async(url)    the same, returning it
  view(response)            save the body to a temp .html file and print its path
  parse(response, "name")   run the spider's callback (default: the request's) on it
  spider, settings, Request
"""


def run_shell(
    url: str | None, settings: Settings, spider: Spider | None, *, stdin: TextIO | None = None
) -> int:
    """The interactive prompt, on `url` if given; its exit status (`exit(n)` gives n).
    `stdin`: read the statements from it, with the plain console."""
    with _LoopThread(settings, spider) as loop:
        helpers = Helpers(loop)
        if url is not None:
            helpers.fetch(url)
        try:
            _interact(helpers, stdin)
        except SystemExit as exc:
            return _exit_status(exc)
    return 0


class _LoopThread:
    """An event loop in a thread of its own, holding a OnePage open until closed."""

    def __init__(self, settings: Settings, spider: Spider | None) -> None:
        self._settings = settings
        self._spider = spider
        self._thread = threading.Thread(target=self._main, name="crawler-shell-loop", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._page: OnePage | None = None

    def __enter__(self) -> _LoopThread:
        self._thread.start()
        self._ready.wait()
        if self._page is None:
            raise RuntimeError("the shell's event loop did not start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._closing is not None:
            self._loop.call_soon_threadsafe(self._closing.set)
        self._thread.join()

    @property
    def page(self) -> OnePage:
        """The open OnePage: use it only from coroutines running on `loop`."""
        assert self._page is not None, "used outside `with`"
        return self._page

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the OnePage belongs to."""
        assert self._loop is not None, "used outside `with`"
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result; Ctrl-C here cancels it there."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the loop, from any running loop (IPython has its own)."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__, in the main thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        async with OnePage(self._settings, self._spider) as page:
            self._page = page
            self._ready.set()
            await self._closing.wait()


class Helpers:
    """The names bound at the prompt, and the namespace they share."""

    def __init__(self, loop: _LoopThread) -> None:
        self._loop = loop
        self.namespace: dict[str, Any] = {
            "__name__": "__console__",
            "__doc__": None,
            "response": None,
            "fetch": self.fetch,
            "fetch_async": self.fetch_async,
            "view": self.view,
            "parse": self.parse,
            "spider": loop.page.spider,
            "settings": loop.page.settings,
            "Request": Request,
        }

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the shell's loop and wait for it."""
        return self._loop.run(coro)

    def fetch(self, url: str | Request) -> Awaitable[None] | None:
        """Fetch a page into `response` and show it. Inside an `await` statement it returns
        an awaitable: `await fetch(url)`."""
        return self._blocking(self._fetch_and_show(url))

    async def fetch_async(self, url: str | Request) -> Response | None:
        """Fetch a page into `response` and return it (None, after one line, if it fails)."""
        return await self._loop.run_async(self._fetch(url))

    def view(self, response: Response | None = None) -> None:
        """Save a response's body (default: `response`) to a temp .html file; print its path."""
        response = response or self.namespace.get("response")
        if not isinstance(response, Response):
            _say("nothing to view: fetch(url) first")
            return
        print(save_page(response))

    def parse(
        self, response: Response | None = None, callback: str | None = None
    ) -> Awaitable[PageResult | None] | PageResult | None:
        """What the spider's callback (by name; default: the request's, or `parse`) makes of
        a response (default: `response`): a PageResult with .items, .requests, .error."""
        return self._blocking(self._parse(response, callback))

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T] | T:
        """Run `coro` and wait, from a plain statement; from an `await` statement (on a
        running loop, which must not block) return an awaitable instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run(coro)
        return self._loop.run_async(coro)

    async def _fetch_and_show(self, url: str | Request) -> None:
        response = await self._fetch(url)
        if response is not None:
            print(f"response = {describe(response)}")

    async def _fetch(self, target: str | Request) -> Response | None:
        request = self._request(target)
        if request is None:
            return None
        try:
            response = await self._loop.page.fetch(request)
        except FetchError as exc:
            _say(f"cannot fetch {request.url}: {exc.reason}")
            return None
        except Exception as exc:  # at a prompt, one line beats a traceback
            _say(f"cannot fetch {request.url}: {type(exc).__name__}: {exc}")
            return None
        self.namespace["response"] = response
        return response

    def _request(self, target: str | Request) -> Request | None:
        """The Request for a URL (relative ones against `response`), or None after one line."""
        if isinstance(target, Request):
            return target
        if not isinstance(target, str):
            _say(f"cannot fetch {target!r}: expected a URL or a Request")
            return None
        url = target.strip()
        current = self.namespace.get("response")
        if not urlsplit(url).scheme and isinstance(current, Response):
            url = current.urljoin(url)
        problem = check_url(url)
        if problem:
            _say(f"cannot fetch {target!r}: {problem}")
            return None
        return Request(url)

    async def _parse(self, response: Response | None, callback: str | None) -> PageResult | None:
        response = response or self.namespace.get("response")
        if not isinstance(response, Response):
            _say("nothing to parse: fetch(url) first")
            return None
        try:
            return await self._loop.page.parse(response, callback)
        except SpiderError as exc:  # no such callback
            _say(str(exc))
            return None


def describe(response: Response) -> str:
    """A response in one line: status, URL, size."""
    return f"<{response.status} {response.url} ({len(response.body):,} bytes)>"


def describe_result(result: PageResult) -> str:
    """A callback's result in one line (its .items and .requests hold the rest)."""
    counts = f"{_count(len(result.items), 'item')}, {_count(len(result.requests), 'request')}"
    error = f", error: {result.error}" if result.error else ""
    return f"<PageResult: {counts}{error}>"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def save_page(response: Response) -> Path:
    """The body in a new temp .html file, with a <base href> so its links still resolve."""
    fd, name = tempfile.mkstemp(prefix="crawler-", suffix=".html")
    with os.fdopen(fd, "wb") as file:
        file.write(_with_base(response.body, response.url))
    return Path(name)


def _with_base(body: bytes, url: str) -> bytes:
    head = _HEAD.search(body, 0, 4096)
    if head is None or b"<base" in body[:4096].lower():
        return body
    tag = f'<base href="{html.escape(url)}">'.encode()
    return body[: head.end()] + tag + body[head.end() :]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# the console


def _interact(helpers: Helpers, stdin: TextIO | None) -> None:
    response = helpers.namespace["response"]
    banner = BANNER.format(
        version=sys.version.split()[0],
        response=describe(response) if isinstance(response, Response) else "None",
    )
    if stdin is None and _wants_ipython():
        _ipython(helpers, banner)
        return
    console = AsyncConsole(helpers, stdin)
    hook = sys.displayhook
    sys.displayhook = _displayhook
    try:
        console.interact(banner=banner, exitmsg="")
    finally:
        sys.displayhook = hook


def _wants_ipython() -> bool:
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice == "python":
        return False
    installed = importlib.util.find_spec("IPython") is not None
    if choice == "ipython" and not installed:
        _say(f"{ENV_VAR}=ipython, but IPython is not installed: using the plain console")
    return installed


class AsyncConsole(code.InteractiveConsole):
    """The standard console; a statement with `await` in it runs on the shell's loop."""

    def __init__(self, helpers: Helpers, stdin: TextIO | None) -> None:
        super().__init__(helpers.namespace, filename="<crawler shell>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._namespace = helpers.namespace
        self._run = helpers.run
        self._stdin = stdin
        if stdin is None and sys.stdin.isatty():
            _enable_readline(helpers.namespace)

    def runcode(self, code: types.CodeType) -> None:
        """Run a compiled statement; a coroutine (it awaits) runs on the loop."""
        try:
            result = types.FunctionType(code, self._namespace)()
            if inspect.iscoroutine(result):
                self._run(result)
        except SystemExit:
            raise
        except KeyboardInterrupt:  # Ctrl-C: what it interrupted is cancelled, the shell goes on
            self.write("KeyboardInterrupt\n")
        except BaseException:
            self.showtraceback()

    def raw_input(self, prompt: str = "") -> str:
        """The next line, from `stdin` if one was given."""
        if self._stdin is None:
            return input(prompt)
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = self._stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


def _displayhook(value: object) -> None:
    """Show responses and results in one line; anything else as the console would."""
    if isinstance(value, Response | PageResult):
        text = describe(value) if isinstance(value, Response) else describe_result(value)
        print(text)
        vars(sys.modules["builtins"])["_"] = value
    else:
        sys.__displayhook__(value)


def _enable_readline(namespace: dict[str, Any]) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:  # Windows without pyreadline: plain input() still works
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")


def _ipython(helpers: Helpers, banner: str) -> None:
    """IPython's embedded shell; `await` cells run on IPython's loop, and the helpers hand
    their work to the shell's loop from there."""
    embed = importlib.import_module("IPython.terminal.embed")
    ipapp = importlib.import_module("IPython.terminal.ipapp")
    embed.InteractiveShellEmbed.clear_instance()
    shell = embed.InteractiveShellEmbed.instance(
        banner1=banner, user_ns=helpers.namespace, config=ipapp.load_default_config()
    )
    shell.loop_runner = "asyncio"  # also turns autoawait on
    plain = shell.display_formatter.formatters["text/plain"]
    plain.for_type(Response, lambda value, printer, cycle: printer.text(describe(value)))
    plain.for_type(PageResult, lambda value, printer, cycle: printer.text(describe_result(value)))
    shell()


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    _say(str(exc.code))
    return 1
