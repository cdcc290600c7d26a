"""Requests as compact bytes, for a frontier kept outside the process (Redis).

A request is a JSON array of its fields in a fixed order, trailing defaults left out:
`[url, callback, depth, priority, method, headers, body, meta, errback, dont_filter,
redirects, cookies, uid]`. Callbacks travel by name, a body and a uid as base64. A
`dont_filter` request has no fingerprint, so the frontier gives it a random uid when it
is admitted: `decode` makes it the request's `fp`, its identity for the collector, kept
when the request is leased again. The URL is stored without its
`scheme://host` when the host is the one its queue is named after (the queue's key says
it): `/path` for http, `~/path` for https, the whole URL otherwise. A typical link
(`parse`, depth 2, priority 0) is its path plus about 14 bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from crawler.http import Callback, Cookies, Request

Resolve = Callable[[str | None], Callback | None]  # a callback's name -> the spider's method

_DEFAULTS: tuple[Any, ...] = (None, 0, 0, "GET", None, None, None, None, False, 0, None, None)
_HTTPS = "~"  # marks a URL stored without "https://host"
# One encoder for every request: json.dumps with arguments builds one per call.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def encode(request: Request, host: str, uid: bytes = b"") -> bytes:
    """`request` as bytes, its URL relative to `host` where it can be; `uid` is the
    identity of a `dont_filter` request (b"" for others)."""
    r = request
    fields: list[Any] = [
        _strip(r.url, host),
        _name(r.callback), r.depth, r.priority, r.method,
        dict(r.headers) if r.headers else None,
        base64.b64encode(r.body).decode() if r.body else None,
        dict(r.meta) if r.meta else None,
        _name(r.errback), r.dont_filter, r.redirects,
        _cookies(r.cookies),
        base64.b64encode(uid).decode() if uid else None,
    ]  # fmt: skip
    end = len(fields)
    while end > 1 and fields[end - 1] == _DEFAULTS[end - 2]:
        end -= 1
    return _dumps(fields[:end]).encode()


def decode(blob: bytes, host: str, resolve: Resolve | None = None) -> Request:
    """The request `encode` wrote, its callbacks looked up by name with `resolve` (left
    None without one)."""
    fields = json.loads(blob)
    url, rest = fields[0], fields[1:]
    rest.extend(_DEFAULTS[len(rest) :])
    (callback, depth, priority, method, headers, body, meta, errback, dont_filter, redirects,
     cookies, uid) = rest  # fmt: skip
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
        base64.b64decode(uid) if uid else b"",
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
