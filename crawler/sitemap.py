"""SitemapSpider: a crawl of the URLs sitemaps list, as in Scrapy.

The sitemaps are pages of the crawl like any other (the same frontier, fetcher and
store): `start_requests` asks for each of `sitemap_urls` with `_parse_sitemap` as the
callback. That callback reads the body in chunks through an XML pull parser (gzip inflated
in chunks too, up to MAX_BODY bytes) and yields a Request for each entry as it reads, so
no sitemap is held whole, parsed or unparsed: a `<sitemapindex>` leads to its sitemaps (those
`sitemap_follow` matches), a `<urlset>` to its pages (those a `sitemap_rules` pattern
matches, with that rule's callback; `<lastmod>` older than SITEMAP_SINCE skipped), and a
robots.txt to the sitemaps of its `Sitemap:` lines. A body that is not a sitemap fails its
page as `SitemapError in _parse_sitemap`; the requests read before the fault are kept.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from protego import Protego

from crawler.dates import parse_when
from crawler.errors import BodyTooLarge, SitemapError, UsageError
from crawler.http import Callback, Request, Response
from crawler.spider import Spider

if TYPE_CHECKING:
    from crawler.settings import Settings

CHUNK = 64 * 1024  # bytes fed to the XML parser at a time
GZIP_MAGIC = b"\x1f\x8b"
XHTML_LINK = "{http://www.w3.org/1999/xhtml}link"
_COMPILED = "_compiled_sitemap_rules"
Entry = tuple[str, str, list[str]]  # loc, lastmod ("" if none), alternate links


class SitemapSpider(Spider):
    """A spider whose pages come from sitemaps.

    `sitemap_urls`: sitemaps, sitemap indexes, or robots.txt URLs (their `Sitemap:` lines
    are followed). `sitemap_rules`: (pattern, callback name) pairs; a page's URL goes to the
    first rule whose pattern `re.search` finds in it, and a URL no rule matches is not
    fetched. `sitemap_follow`: patterns of the sitemaps an index leads to that are read
    (default: all). `sitemap_alternate_links`: also crawl a `<url>`'s alternate-language
    links (`<xhtml:link rel="alternate" href=...>`). Override `sitemap_filter` to filter
    or change the entries of every sitemap and index as they are read.
    """

    sitemap_urls: Sequence[str] = ()
    sitemap_rules: ClassVar[Sequence[tuple[str, str]]] = (("", "parse"),)
    sitemap_follow: ClassVar[Sequence[str]] = ("",)
    sitemap_alternate_links: ClassVar[bool] = False

    _since: datetime | None = None
    _max_body: int = 10 * 1024 * 1024

    def prepare(self, settings: Settings) -> None:
        """Compile the sitemap rules (UsageError for a bad pattern or callback name); take
        SITEMAP_SINCE and MAX_BODY; START_URL, when set, is the one sitemap URL."""
        super().prepare(settings)
        for _, name in _rules(type(self))[0]:
            if not callable(getattr(self, name, None)):
                raise UsageError(
                    f"spider {self.name!r}: sitemap_rules: no callback {name!r} "
                    f"on {type(self).__name__}"
                )
        self._since, self._max_body = settings.sitemap_since, settings.max_body
        if settings.start_url:  # the sitemaps are this spider's start URLs
            self.sitemap_urls = [settings.start_url]

    def start_requests(self) -> Iterator[Request]:
        """A request for each of `sitemap_urls`, read by `_parse_sitemap`."""
        for url in self.sitemap_urls:
            yield Request(url, callback=self._parse_sitemap)

    def sitemap_filter(self, entries: Iterator[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """The entries to keep, as Scrapy has it: `{"loc": url}`, with `"lastmod"` and
        `"alternate"` (a list of URLs) when the sitemap gives them. All, by default."""
        return entries

    def _filtered(self, entries: Iterator[Entry]) -> Iterator[Entry]:
        records = (
            {"loc": loc, **({"lastmod": mod} if mod else {}), **({"alternate": alt} if alt else {})}
            for loc, mod, alt in entries
        )
        for entry in self.sitemap_filter(records):
            yield entry["loc"], entry.get("lastmod", ""), list(entry.get("alternate", ()))

    def _parse_sitemap(self, response: Response) -> Iterator[Request]:
        """A sitemap, a sitemap index or a robots.txt: a Request for each entry kept."""
        if response.url.partition("?")[0].endswith("/robots.txt"):
            for url in Protego.parse(response.text).sitemaps:
                yield Request(url, callback=self._parse_sitemap)
            return
        rules, follow = _rules(type(self))
        callbacks = [(pattern, getattr(self, name)) for pattern, name in rules]
        read = _entries(_chunks(response.body, self._max_body, response.request))
        kind = next(read, None)
        entries: Iterator[Entry] = read
        if type(self).sitemap_filter is not SitemapSpider.sitemap_filter:
            entries = self._filtered(entries)
        if kind == "sitemapindex":
            for loc, _, _ in entries:
                if any(p.search(loc) for p in follow):
                    yield Request(loc, callback=self._parse_sitemap)
        elif kind == "urlset":
            since, alternates = self._since, self.sitemap_alternate_links
            for loc, lastmod, others in entries:
                if since is not None and lastmod and _older(lastmod, since):
                    continue
                for url in (loc, *others) if alternates else (loc,):
                    callback = _callback_for(url, callbacks)
                    if callback is not None:
                        yield Request(url, callback=callback)
        else:
            raise SitemapError(f"not a sitemap: the root element is <{kind}>")


def _callback_for(url: str, callbacks: list[tuple[re.Pattern[str], Callback]]) -> Any:
    for pattern, callback in callbacks:
        if pattern.search(url):
            return callback
    return None


def _chunks(body: bytes, limit: int, request: Request) -> Iterator[bytes]:
    """The body in chunks, inflated on the way if it is gzip (a `.gz` sitemap served as
    `application/x-gzip`, without Content-Encoding), at most `limit` bytes inflated."""
    if not body.startswith(GZIP_MAGIC):
        for start in range(0, len(body), CHUNK):
            yield body[start : start + CHUNK]
        return
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    try:
        for start in range(0, len(body), CHUNK):
            data = inflate.decompress(body[start : start + CHUNK], CHUNK)
            while data:
                total += len(data)
                if total > limit:
                    raise BodyTooLarge(request, "BodyTooLarge")
                yield data
                data = inflate.decompress(inflate.unconsumed_tail, CHUNK)
    except zlib.error as exc:
        raise SitemapError(f"broken gzip: {exc}") from None
    if not inflate.eof:
        raise SitemapError("gzip cut off")


def _entries(chunks: Iterator[bytes]) -> Iterator[Any]:
    """The root element's name, then (loc, lastmod, alternate hrefs) for each <url> or
    <sitemap> as the parser reaches its end; each is dropped once read."""
    parser: Any = XMLPullParser(events=("start", "end"))  # typeshed's element type varies
    root: Element | None = None
    depth = 0
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start":
                    depth += 1
                    if root is None:
                        root = element
                        yield _local(element.tag)
                    continue
                depth -= 1
                if depth == 1 and root is not None:  # a <url> or a <sitemap>, complete
                    entry = _entry(element)
                    root.clear()  # what was read is not kept
                    if entry is not None:
                        yield entry
        parser.close()
    except ParseError as exc:
        raise SitemapError(f"not XML: {exc}") from None
    if root is None:
        raise SitemapError("empty body")


def _entry(element: Element) -> Entry | None:
    loc = lastmod = ""
    alternates: list[str] = []
    for child in element:
        name = _local(child.tag)
        if name == "loc":
            loc = (child.text or "").strip()
        elif name == "lastmod":
            lastmod = (child.text or "").strip()
        elif child.tag == XHTML_LINK and child.get("rel") == "alternate" and child.get("href"):
            alternates.append(child.get("href", "").strip())
    return (loc, lastmod, alternates) if loc else None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _older(lastmod: str, since: datetime) -> bool:
    """Whether a W3C datetime (2024, 2024-05, 2024-05-31, 2024-05-31T10:00+02:00) is
    before `since`; False when it does not parse (the entry is kept)."""
    when = parse_when(lastmod)
    return when is not None and when < since


def _rules(
    cls: type[SitemapSpider],
) -> tuple[list[tuple[re.Pattern[str], str]], list[re.Pattern[str]]]:
    """The class's sitemap rules and follow patterns, compiled once per class."""
    cached: tuple[list[tuple[re.Pattern[str], str]], list[re.Pattern[str]]] | None
    cached = cls.__dict__.get(_COMPILED)
    if cached is None:
        where = f"spider {cls.name!r}"
        rules = []
        for rule in cls.sitemap_rules:
            if not (isinstance(rule, tuple | list) and len(rule) == 2 and isinstance(rule[1], str)):
                raise UsageError(
                    f"{where}: sitemap_rules: expected (pattern, method name), got {rule!r}"
                )
            rules.append((_compile(where, "sitemap_rules", rule[0]), rule[1]))
        follow = [_compile(where, "sitemap_follow", p) for p in cls.sitemap_follow]
        cached = (rules, follow)
        setattr(cls, _COMPILED, cached)
    return cached


def _compile(where: str, name: str, pattern: Any) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise UsageError(f"{where}: {name}: bad pattern {pattern!r}: {exc}") from None
