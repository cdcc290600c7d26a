"""A page's result as compact bytes, for a worker to send to the collector (Redis).

A worker fetches and parses a page; the collector stores it in the crawl's SQLite file.
The result carries what the collector stores of the page: status, final URL, size,
attempts, items (and their type names), the error, the outcome flags, the links and items
dropped (counted by reason), timing, headers and validators, and how many new requests
the worker sent. The links themselves stay in Redis, which admits them; the stream entry
beside the result says how many of them it found new (`decode`'s `new`).

The bytes are a JSON object; a field at its default is left out, and the final URL too
when it is the URL asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from crawler.http import PageResult, Request

_DUPLICATE = "duplicate"
_HOP_SEEN = "redirect to a page already crawled"  # as the SQLite store counts a lost hop
_FLAGS = ("skipped", "redirected", "not_modified")
_OPTIONAL = ("status", "error", "elapsed", "error_text", "etag", "last_modified", "types")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def encode(page: PageResult) -> bytes:
    """What the collector needs of `page`, as bytes."""
    fields: dict[str, Any] = {}
    if page.url != page.request.url:
        fields["url"] = page.url
    if page.size:
        fields["size"] = page.size
    if page.attempts != 1:
        fields["attempts"] = page.attempts
    if page.items:
        fields["items"] = page.items
    for name in _OPTIONAL:
        value = getattr(page, name)
        if value is not None:
            fields[name] = value
    for name in _FLAGS:
        if getattr(page, name):
            fields[name] = True
    if page.requests:
        fields["sent"] = len(page.requests)
    if page.dropped:
        fields["dropped"] = dict(page.dropped)
    if page.dropped_items:
        fields["dropped_items"] = Counter(reason for _, reason in page.dropped_items)
    if page.headers is not None:
        fields["headers"] = _headers(page.headers)
    return _dumps(fields).encode()


def decode(blob: bytes, request: Request, new: int) -> PageResult:
    """The page `encode` wrote, for the collector to store: its request is `request` (as
    `wire.decode` gave it, its fingerprint with it), its links are gone (they live in
    Redis), and those Redis refused as seen before (sent - new) are counted among its
    drops."""
    fields = json.loads(blob)
    page = PageResult(
        request,
        status=fields.get("status"),
        url=fields.get("url", request.url),
        size=fields.get("size", 0),
        attempts=fields.get("attempts", 1),
        items=fields.get("items", []),
        error=fields.get("error"),
        dropped=Counter(fields.get("dropped", {})),
        types=fields.get("types"),
        elapsed=fields.get("elapsed"),
        error_text=fields.get("error_text"),
        etag=fields.get("etag"),
        last_modified=fields.get("last_modified"),
    )
    for name in _FLAGS:
        setattr(page, name, fields.get(name, False))
    refused = fields.get("sent", 0) - new
    if refused > 0:
        page.dropped[_HOP_SEEN if page.redirected else _DUPLICATE] += refused
    if "dropped_items" in fields:  # one (None, reason) pair per item: the counts are stored
        page.dropped_items = [
            (None, reason)
            for reason, count in fields["dropped_items"].items()
            for _ in range(count)
        ]
    if "headers" in fields:
        headers = fields["headers"]
        page.headers = dict(headers) if isinstance(headers, dict) else CIMultiDict(headers)
    return page


def _headers(headers: Mapping[str, str]) -> dict[str, str] | list[tuple[str, str]]:
    """A dict, or a list of (name, value) pairs when a name repeats (a multidict's
    Set-Cookie, Link...)."""
    pairs = list(headers.items())
    if len({name.lower() for name, _ in pairs}) == len(pairs):
        return dict(pairs)
    return pairs
