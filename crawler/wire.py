"""Requests as compact bytes, for a frontier kept outside the process (Redis).

A request is its identity, 16 bytes, then a JSON array of its fields in a fixed order,
trailing defaults left out: `[url, callback, depth, priority, method, headers, body,
meta, errback, dont_filter, redirects, cookies]`. The identity is the request's
fingerprint; a `dont_filter` request has none, so the frontier gives it a random uid
when it is admitted. `decode` makes the identity the request's `fp`: the collector
stores pages under it, and a worker's cache finds responses by it, with no fingerprint
to compute again. Callbacks travel by name, a body as base64. The URL is stored without
its `scheme://host` when the host is the one its queue is named after (the queue's key
says it): `/path` for http, `~/path` for https, the whole URL otherwise. A typical link
(`parse`, depth 2, priority 0) is its path plus about 30 bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from crawler.http import Callback, Cookies, Request

Resolve = Callable[[str | None], Callback | None]  # a callback's name -> the spider's method

_DEFAULTS: tuple[Any, ...] = (None, 0, 0, "GET", None, None, None, None, False, 0, None)
IDENT = 16  # bytes of identity before the fields: a fingerprint, or a dont_filter uid
FORMAT = 2  # this layout; 1: the JSON array alone. A crawl in Redis records its own.
_HTTPS = "~"  # marks a URL stored without "https://host"
# One encoder for every request: json.dumps with arguments builds one per call.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def encode(request: Request, host: str, ident: bytes) -> bytes:
    """`request` as bytes, its URL relative to `host` where it can be; `ident` is its
    fingerprint, or a `dont_filter` request's uid (IDENT bytes)."""
    if len(ident) != IDENT:
        raise ValueError(f"a request's identity is {IDENT} bytes, not {len(ident)}")
    r = request
    fields: list[Any] = [
        _strip(r.url, host),
        _name(r.callback), r.depth, r.priority, r.method,
        dict(r.headers) if r.headers else None,
        base64.b64encode(r.body).decode() if r.body else None,
        dict(r.meta) if r.meta else None,
        _name(r.errback), r.dont_filter, r.redirects,
        _cookies(r.cookies),
    ]  # fmt: skip
    end = len(fields)
    while end > 1 and fields[end - 1] == _DEFAULTS[end - 2]:
        end -= 1
    return ident + _dumps(fields[:end]).encode()


def decode(blob: bytes, host: str, resolve: Resolve | None = None) -> Request:
    """The request `encode` wrote, its identity as its `fp`, its callbacks looked up by
    name with `resolve` (left None without one)."""
    fields = json.loads(blob[IDENT:])
    url, rest = fields[0], fields[1:]
    rest.extend(_DEFAULTS[len(rest) :])
    (
        callback,
        depth,
        priority,
        method,
        headers,
        body,
        meta,
        errback,
        dont_filter,
        redirects,
        cookies,
    ) = rest
    return Request.make(
        _unstrip(url, host),
        resolve(callback) if resolve is not None else None,
        method,
        headers,
        base64.b64decode(body) if body else None,
        meta,
        priority,
        bool(dont_filter),
        resolve(errback) if resolve is not None else None,
        depth,
        redirects,
        0,
        blob[:IDENT],
        cookies,
    )


def _strip(url: str, host: str) -> str:
    if url.startswith("http://") and url.startswith(host, 7):
        rest = url[7 + len(host) :]
        if rest[:1] in ("", "/", "?"):
            return rest
    elif url.startswith("https://") and url.startswith(host, 8):
        rest = url[8 + len(host) :]
        if rest[:1] in ("", "/", "?"):
            return _HTTPS + rest
    return url


def _unstrip(url: str, host: str) -> str:
    if url.startswith(("http:", "https:")):
        return url
    if url.startswith(_HTTPS):
        return f"https://{host}{url[1:]}"
    return f"http://{host}{url}"


def _cookies(cookies: Cookies | None) -> Any:
    if cookies is None:
        return None
    return dict(cookies) if isinstance(cookies, Mapping) else [dict(c) for c in cookies]


def _name(callback: Any) -> str | None:
    return None if callback is None else str(callback.__name__)
