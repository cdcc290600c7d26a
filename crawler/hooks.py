"""The extension points: item pipelines, request/response middleware, crawl events.

Each is a list of plain objects with optional methods, sync or async. The methods are
looked up once, when the crawl starts, into lists of bound methods per hook; the hot path
loops over a list that is empty when nobody extends that hook, so the default crawl pays
one truth test per page. Each hook has one place in the crawl:

- pipelines (`PIPELINES`): `process_item(item, response)` in the parse stage, after the
  callback and before the page's commit; `open(crawl)` / `close(crawl)` around each run.
- middleware (`MIDDLEWARES`): `process_request(request)` in the fetch step, after the
  frontier handed the request out; `process_response(request, response)` and
  `process_error(request, error)` after the fetch and its retries.
- events: `spider.opened(crawl)` each run, `spider.closed(crawl, summary)` once, when
  the crawl has ended; `crawl.subscribe(name, handler)` for `page_stored`, `page_failed`
  and `item_dropped`, fired by the writer after each commit.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.errors import DropItem, IgnoreRequest, UsageError
from crawler.http import PageResult, Request, Response

if TYPE_CHECKING:
    from crawler.settings import Settings
    from crawler.spider import Spider
    from crawler.stats import Stats

log = logging.getLogger(__name__)

PIPELINE_METHODS = ("process_item",)
MIDDLEWARE_METHODS = ("process_request", "process_response", "process_error")
EVENTS = ("page_stored", "page_failed", "item_dropped")


async def maybe_await(value: Any) -> Any:
    """`value`, awaited if it is awaitable (a hook may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


def _label(method: Callable[..., Any]) -> str:
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "hook")
    return f"{type(owner).__name__}.{name}" if owner is not None else name


# -- loading: settings -> objects, checked before anything is fetched ----------------------


def resolve_components(key: str, raw: Any, methods: Sequence[str]) -> tuple[Any, ...]:
    """PIPELINES / MIDDLEWARES as given (import paths, comma-separated or in a list; classes;
    instances) -> classes or instances that have at least one of `methods`. UsageError
    otherwise, naming the entry."""
    if isinstance(raw, str):
        entries: list[Any] = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list | tuple):
        entries = list(raw)
    elif raw is None:
        entries = []
    else:
        entries = [raw]
    resolved = []
    for entry in entries:
        component = _import(key, entry) if isinstance(entry, str) else entry
        if inspect.isfunction(component) or inspect.ismodule(component):
            raise UsageError(f"setting {key}: {_name_of(component)} is not a class")
        if not any(callable(getattr(component, m, None)) for m in methods):
            wanted = " or ".join(methods)
            raise UsageError(f"setting {key}: {_name_of(component)} has no {wanted} method")
        resolved.append(component)
    return tuple(resolved)


def _import(key: str, path: str) -> Any:
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise UsageError(f"setting {key}: {path!r}: expected an import path like pkg.mod:Class")
    if str(Path.cwd()) not in sys.path:  # importable from the current folder, as spiders are
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"setting {key}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"setting {key}: {module_name} has no {attribute!r}") from None


def _name_of(component: Any) -> str:
    if isinstance(component, type) or inspect.isfunction(component):
        return component.__qualname__
    if inspect.ismodule(component):
        return component.__name__
    return type(component).__name__


def instantiate(key: str, components: Sequence[Any]) -> list[Any]:
    """Classes called with no arguments; instances used as they are."""
    objects = []
    for component in components:
        if isinstance(component, type):
            try:
                component = component()
            except Exception as exc:
                raise UsageError(
                    f"setting {key}: {component.__qualname__}() failed: {type(exc).__name__}: {exc}"
                ) from None
        objects.append(component)
    return objects


def bound(objects: Sequence[Any], name: str) -> list[Callable[..., Any]]:
    """The objects' methods called `name` (`process_item`, `open`...), in order."""
    return [m for o in objects if callable(m := getattr(o, name, None))]


# -- the crawl handle that hooks receive --------------------------------------------------


class Crawl:
    """What `opened`, `open` and `close` receive: the crawl's spider, settings, database
    (None in a Redis worker, which has none) and live stats; `subscribe()` to its
    events; `stop()` it as Ctrl-C would."""

    def __init__(
        self,
        spider: Spider,
        settings: Settings,
        db: Path | None,
        stats: Stats,
        stop: Callable[[], None],
    ) -> None:
        self.spider = spider
        self.settings = settings
        self.db = db
        self.stats = stats
        self._stop = stop
        self.handlers: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENTS}

    def subscribe(self, event: str, handler: Callable[..., Any]) -> None:
        """Call `handler` (sync or async) on each `event`: page_stored(page, stats),
        page_failed(page, stats), item_dropped(item, reason, stats)."""
        if event not in self.handlers:
            raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
        if not callable(handler):
            raise TypeError(f"handler for {event!r} is not callable: {handler!r}")
        self.handlers[event].append(handler)

    def stop(self) -> None:
        """Fetch nothing new; the crawl ends as after one Ctrl-C, resumable."""
        self._stop()


# -- pipelines -----------------------------------------------------------------------------


class Pipelines:
    """The item pipelines of a crawl, in order."""

    def __init__(self, objects: Sequence[Any]) -> None:
        self.objects = list(objects)
        self.process_item = bound(objects, "process_item")

    async def item(self, item: Any, response: Response | None) -> tuple[Any, str | None]:
        """(item, None) to keep the item the pipelines returned; (item as it was, reason) to
        drop it. Any exception but DropItem escapes as HookError, for the page to record."""
        for step in self.process_item:
            try:
                out = step(item, response)
                if inspect.isawaitable(out):
                    out = await out
            except DropItem as exc:
                return item, str(exc) or f"dropped by {_label(step)}"
            except Exception as exc:
                raise HookError(_label(step), exc) from exc
            if out is None:
                return item, f"dropped by {_label(step)}"
            item = out
        return item, None


class HookError(Exception):
    """A user's hook raised: `where` names it ("Clean.process_item"), `__cause__` is the
    original. The page records it as `ValueError in Clean.process_item`."""

    def __init__(self, where: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__} in {where}: {cause}")
        self.kind = f"{type(cause).__name__} in {where}"


# -- middleware ----------------------------------------------------------------------------


class Middlewares:
    """The request/response middleware of a crawl, in order."""

    def __init__(self, objects: Sequence[Any]) -> None:
        self.objects = list(objects)
        self.process_request = bound(objects, "process_request")
        self.process_response = bound(objects, "process_response")
        self.process_error = bound(objects, "process_error")

    async def request(self, request: Request) -> tuple[Request | str, str]:
        """The request to fetch, or why the page is not fetched (a skip reason); with the
        label of the last step that answered."""
        label = ""
        for step in self.process_request:
            out, label = await _call(step, request), _label(step)
            if isinstance(out, str):
                return out, label
            if not isinstance(out, Request):
                return _dropped_or_wrong(step, out, "a Request or None"), label
            request = out
        return request, label

    async def response(
        self, request: Request, response: Response
    ) -> tuple[Response | Request | str, str]:
        """What to make of a fetched page: the response, a request to fetch in its place, or
        why the page is dropped; with the label of the step that decided."""
        for step in self.process_response:
            out = await _call(step, request, response)
            if isinstance(out, str | Request):
                return out, _label(step)
            if not isinstance(out, Response):
                return _dropped_or_wrong(step, out, "a Response, a Request or None"), _label(step)
            response = out
        return response, ""

    async def error(
        self, request: Request, error: Exception
    ) -> tuple[Response | Request | None, str]:
        """A response or a request that recovers a failed fetch, or None (it stays failed);
        with the label of the step that recovered it."""
        for step in self.process_error:
            out = await _call(step, request, error)
            if out is None:
                continue
            if not isinstance(out, Response | Request):
                wrong = TypeError(f"returned {type(out).__name__}, not a Response, Request or None")
                raise HookError(_label(step), wrong)
            return out, _label(step)
        return None, ""


async def _call(step: Callable[..., Any], *args: Any) -> Any:
    """A middleware method's answer; IgnoreRequest's reason as a str; other exceptions
    as HookError."""
    try:
        out = step(*args)
        if inspect.isawaitable(out):
            out = await out
    except IgnoreRequest as exc:
        return str(exc) or f"ignored by {_label(step)}"
    except Exception as exc:
        raise HookError(_label(step), exc) from exc
    if isinstance(out, str):  # a str is not a valid answer: make it one that is refused
        raise HookError(_label(step), TypeError("returned str"))
    return out


def _dropped_or_wrong(step: Callable[..., Any], out: Any, expected: str) -> str:
    if out is None:
        return f"dropped by {_label(step)}"
    raise HookError(_label(step), TypeError(f"returned {type(out).__name__}, not {expected}"))


# -- events --------------------------------------------------------------------------------


async def fire(handlers: list[Callable[..., Any]], *args: Any) -> None:
    """Call each handler; one that raises is logged and the crawl goes on."""
    for handler in handlers:
        try:
            await maybe_await(handler(*args))
        except Exception as exc:
            log.error("%s raised %s: %s", _label(handler), type(exc).__name__, exc)


async def call_each(methods: list[Callable[..., Any]], *args: Any) -> None:
    """Call `opened`/`open` hooks in order; the first to raise ends the run before anything
    is fetched, as a UsageError naming it."""
    for method in methods:
        try:
            await maybe_await(method(*args))
        except Exception as exc:
            raise UsageError(f"{_label(method)} raised {type(exc).__name__}: {exc}") from exc


def record_drop(result: PageResult, item: Any, reason: str) -> None:
    """Remember a dropped item on its page (counted and fired after the commit)."""
    if result.dropped_items is None:
        result.dropped_items = []
    result.dropped_items.append((item, reason))
