"""Request, Response and PageResult: the plain records that flow between stages.

No I/O here. A Response decodes and parses its body lazily, once, on first use.
`redirect_request` turns a redirect answer into the request for its next hop.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field, replace
from typing import Any

from charset_normalizer import from_bytes
from selectolax.lexbor import LexborHTMLParser, LexborNode

from crawler.errors import FetchError
from crawler.urls import host_of, joiner, urljoin

Callback = Callable[..., Any]
Item = dict[str, Any]  # as stored; a callback may also yield dataclass instances
# Request(cookies=...): {name: value}, or Scrapy's list of {"name", "value", "domain", "path"}
Cookies = Mapping[str, str] | list[dict[str, Any]]
_NO_JSON: Any = object()  # Request(json=...) not given

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.+-]+)""", re.I)
_NEAR_TIE = 0.1  # charset-normalizer's "chaos" difference that counts as a tie
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.I)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
NOT_MODIFIED = 304
MAX_REDIRECTS = 10  # hops followed from one request, at most
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
_CONDITIONS = frozenset({"if-none-match", "if-modified-since"})  # about the URL asked for


@dataclass(slots=True)
class Request:
    """A page to fetch, and the spider method that will parse it. Treat it as a value:
    `replace()` makes a changed copy. (Not a frozen dataclass: a frozen one takes four
    times as long to build, and a crawl builds one per link.)"""

    url: str
    callback: Callback | None = None
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    meta: Mapping[str, Any] | None = None  # the user's; the framework reads only Scrapy's
    # keys "cookiejar", "dont_merge_cookies" (crawler/cookies.py) and "proxy"
    priority: int = 0
    dont_filter: bool = False
    errback: Callback | None = None
    depth: int = 0  # our own state is a typed field, never a magic meta key
    redirects: int = 0  # the redirect hops that led to this request
    key: int = field(default=0, repr=False, compare=False)  # its row in the crawl database
    fp: bytes = field(default=b"", repr=False, compare=False)  # its fingerprint, once admitted
    cookies: Cookies | None = None  # sent with it, and kept in its session's jar
    json: InitVar[Any] = _NO_JSON  # a JSON body: sets body, Content-Type, and POST for GET

    def __post_init__(self, json: Any) -> None:
        if self.body is not None and isinstance(self.body, str):
            self.body = self.body.encode()
        if self.method != "GET" and self.method != self.method.upper():
            self.method = self.method.upper()
        if json is not _NO_JSON:
            self._set_json(json)

    def _set_json(self, data: Any) -> None:
        self.body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        if self.method == "GET":  # a JSON body is sent with POST unless another method is given
            self.method = "POST"
        headers = dict(self.headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        self.headers = headers

    def replace(self, **changes: Any) -> Request:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @staticmethod
    def make(
        url: str,
        callback: Callback | None,
        method: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        meta: Mapping[str, Any] | None,
        priority: int,
        dont_filter: bool,
        errback: Callback | None,
        depth: int,
        redirects: int,
        key: int,
        fp: bytes,
        cookies: Cookies | None,
    ) -> Request:
        """A Request with every field given: the one place that builds one by position,
        for the paths that build one per new link (dataclasses.replace costs several
        times as much)."""
        return Request(
            url, callback, method, headers, body, meta, priority, dont_filter, errback, depth,
            redirects, key, fp, cookies,
        )  # fmt: skip


@dataclass(slots=True, eq=False)
class Response:
    """A fetched page: status, headers and body, with lazy text, JSON and CSS access."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    request: Request
    _text: str | None = field(default=None, repr=False)
    _encoding: str | None = field(default=None, repr=False)
    _tree: LexborHTMLParser | None = field(default=None, repr=False)
    _base: str | None = field(default=None, repr=False)
    _join: Callable[[str], str] | None = field(default=None, repr=False)

    @property
    def meta(self) -> Mapping[str, Any]:
        """The request's meta (empty if it had none)."""
        return self.request.meta or {}

    @property
    def encoding(self) -> str:
        """The charset `text` was decoded with (see `decode_body`)."""
        if self._encoding is None:
            self._decode()
        return self._encoding or "utf-8"

    @property
    def text(self) -> str:
        """The body decoded: declared charset, then UTF-8, then detection."""
        if self._text is None:
            self._decode()
        return self._text or ""

    def _decode(self) -> None:
        self._text, self._encoding = decode_body(self.headers.get("Content-Type", ""), self.body)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text)

    @property
    def is_markup(self) -> bool:
        """Whether the body is HTML or XML: its Content-Type says so, or, without one, it
        looks like markup. Only markup is parsed: a PDF, an image, `application/octet-stream`
        or JSON gives an empty document, so `css()` finds nothing in it."""
        content_type = self.headers.get("Content-Type", "")
        if content_type:
            kind = content_type.partition(";")[0].strip().lower()
            return "html" in kind or kind.endswith(("/xml", "+xml"))
        return _looks_like_markup(self.body)

    @property
    def tree(self) -> LexborHTMLParser:
        """The selectolax (Lexbor) document, parsed once (empty unless `is_markup`)."""
        if self._tree is None:
            if not self.is_markup:
                self._tree = LexborHTMLParser("")
                return self._tree
            # Lexbor reads UTF-8 bytes as they are: no re-encoding of the decoded text.
            utf8 = self.encoding == "utf-8" and not self.body.startswith(codecs.BOM_UTF8)
            self._tree = LexborHTMLParser(self.body if utf8 else self.text)
        return self._tree

    def css(self, selector: str) -> list[LexborNode]:
        """Every node matching a CSS selector; none in a body that is not HTML or XML."""
        return self.tree.css(selector)

    def css_first(self, selector: str) -> LexborNode | None:
        """The first node matching a CSS selector, or None (always, in a body that is not
        HTML or XML)."""
        return self.tree.css_first(selector)

    @property
    def base_url(self) -> str:
        """What relative links resolve against: the page's <base href>, else its URL."""
        if self._base is None:
            self._base = self.url.partition("#")[0]
            head = self.body[:4096]
            if b"<base" in head or b"<BASE" in head:
                node = self.tree.css_first("base[href]")
                href = node.attributes.get("href") if node is not None else None
                if href:
                    self._base = urljoin(self._base, href.strip())
        return self._base

    def urljoin(self, url: str) -> str:
        """`url` resolved against this page (its <base href> if it has one), no fragment."""
        join = self._join or self._joiner()
        return join(url)

    def _joiner(self) -> Callable[[str], str]:
        self._join = joiner(self.base_url).join
        return self._join

    def follow(self, url: str | LexborNode, callback: Callback | None = None, **kw: Any) -> Request:
        """A Request for `url` (a string or an <a> node) resolved against this page."""
        if not isinstance(url, str):
            url = url.attributes.get("href") or ""
        join = self._join or self._joiner()  # called once per link: kept short
        absolute = join(url.strip())
        return Request(absolute, callback, **kw) if kw else Request(absolute, callback)


_MARKUP_START = re.compile(rb"\s*(?:\xef\xbb\xbf)?\s*<(?:[!?a-zA-Z])")


def _looks_like_markup(body: bytes) -> bool:
    """A body without a Content-Type: markup if it starts with a tag, a doctype, a comment
    or an XML declaration and has no NUL byte near the start (binary formats do)."""
    head = body[:1024]
    return b"\x00" not in head and _MARKUP_START.match(head) is not None


def redirect_request(response: Response) -> Request | None:
    """The request for a redirect's next hop, or None if `response` is not a redirect
    (301/302/303/307/308 with a Location); FetchError "TooManyRedirects" past
    MAX_REDIRECTS hops. The hop keeps the request's callbacks, meta, priority and depth
    (it stands for the same page); a 303, or a 301/302 answering a POST, becomes a GET.
    Conditions (If-None-Match, If-Modified-Since) are not carried to another URL."""
    if response.status not in REDIRECTS:
        return None
    location = response.headers.get("Location", "").strip()
    if not location:
        return None
    r = response.request
    if r.redirects >= MAX_REDIRECTS:
        raise FetchError(r, "TooManyRedirects", response=response)
    url = urljoin(response.url.partition("#")[0], location)
    method, body, headers, status = r.method, r.body, r.headers, response.status
    if (status == 303 and method != "HEAD") or (status < 303 and method == "POST"):
        method, body = "GET", None
        if headers:
            headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    if headers and host_of(url) != host_of(r.url):  # credentials stay with their host
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    if headers and any(k.lower() in _CONDITIONS for k in headers):  # a refresh's validators
        headers = {k: v for k, v in headers.items() if k.lower() not in _CONDITIONS}
    # Cookies kept out of the jar (dont_merge_cookies) go on with the request on its host;
    # merged ones are in the jar already, which sends them wherever their domain allows.
    keep = (
        r.cookies and r.meta and r.meta.get("dont_merge_cookies") and host_of(url) == host_of(r.url)
    )
    return Request.make(
        url=url,
        callback=r.callback,
        method=method,
        headers=headers or None,
        body=body,
        meta=r.meta,
        priority=r.priority,
        dont_filter=r.dont_filter,
        errback=r.errback,
        depth=r.depth,
        redirects=r.redirects + 1,
        key=0,  # not admitted yet
        fp=b"",
        cookies=r.cookies if keep else None,
    )


def decode_body(content_type: str, body: bytes) -> tuple[str, str]:
    """The text of a body and its charset: the Content-Type header's, then <meta charset>,
    then UTF-8, each taken only if the body decodes with it; then charset detection."""
    header = _HEADER_CHARSET.search(content_type)
    meta = _META_CHARSET.search(body[:2048])
    for name in (header.group(1) if header else None, meta.group(1).decode() if meta else None):
        if name:
            try:
                encoding = codecs.lookup(name).name
                return body.decode(encoding), encoding
            except (LookupError, UnicodeDecodeError):
                pass  # an unknown or wrong declaration: try the next source
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        encoding = _detect(body[:65536])
        return body.decode(encoding, errors="replace"), encoding


def _detect(sample: bytes) -> str:
    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return "utf-8"
    # Short Western text fits several single-byte charsets almost equally well; a near
    # tie goes to windows-1252, the web's default legacy charset (WHATWG's "latin1").
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + _NEAR_TIE:
            return "cp1252"
    return str(best.encoding)


@dataclass(slots=True)
class PageResult:
    """What one request came to: the parsed items and links, or the error it ended with."""

    request: Request
    status: int | None = None
    url: str | None = None
    size: int = 0
    attempts: int = 1
    items: list[Item] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None  # the kind shown in status: "404", "TimeoutError", ...
    skipped: bool = False  # not fetched on purpose (robots.txt; `error` says why), not failed
    redirected: bool = False  # answered with a redirect: its one request is the next hop
    dropped: Counter[str] = field(default_factory=Counter)  # links refused, by reason
    typed: bool = False  # some items are dataclass instances, to be validated and converted
    types: list[str | None] | None = None  # each item's type name, once any has one
    dropped_items: list[tuple[Any, str]] | None = None  # (item, reason) not stored
    elapsed: float | None = None  # seconds the fetch took (for the dashboard)
    headers: Mapping[str, str] | None = None  # the response's headers, when there was one
    error_text: str | None = None  # the error's message, beside its kind in `error`
    cookies: list[Any] | None = None  # cookie rows its answers set, saved with its commit
    etag: str | None = None  # the response's validators, for a later conditional GET
    last_modified: str | None = None
    not_modified: bool = False  # answered 304: no callback ran
