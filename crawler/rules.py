"""CrawlSpider and Rule: a whole-site crawl declared as link rules, as in Scrapy.

A page's links (`a[href]`, `area[href]`, inside the regions a rule's `css` selects) are
resolved against the page, and each goes to the first rule whose `allow` patterns match it
(any of them; none: every link) and whose `deny` patterns do not (`re.search` on the
absolute URL). The rule decides what parses the linked page (its `callback`, a method name)
and whether that page's links go through the rules again (`follow`).

A link's request calls a spider method, found again by name when a crawl resumes:
the rule's callback itself when the rule does nothing more; `parse` when the rule only
follows; `_rule_N` (N: the rule's index) when it does both, has `cb_kwargs`, or neither
parses nor follows. Keep the rules' order between the runs of one crawl.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from crawler.errors import UsageError
from crawler.http import Request, Response
from crawler.spider import Spider

if TYPE_CHECKING:
    from crawler.settings import Settings

LINKS = "a[href], area[href]"
_COMPILED = "_compiled_rules"  # the class attribute that caches a class's compiled rules


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Which links to take (`allow`, `deny`: a pattern or a list, searched in the absolute
    URL; `css`: the regions of the page to take them from) and what to do with the pages
    they lead to (`callback`: a spider method's name; `follow`: put their links through
    the rules too, by default when there is no callback). `process_request` names a
    spider method called with (request, response) that returns the request to crawl
    (changed or not) or None to drop it; `errback` one called with the FetchError of a
    linked page that failed for good."""

    allow: str | Sequence[str] = ()
    deny: str | Sequence[str] = ()
    css: str | Sequence[str] | None = None
    callback: str | None = None
    follow: bool | None = None
    cb_kwargs: Mapping[str, Any] | None = None
    process_request: str | None = None
    errback: str | None = None


@dataclass(frozen=True, slots=True)
class _Compiled:
    index: int
    allow: tuple[re.Pattern[str], ...]
    deny: tuple[re.Pattern[str], ...]
    css: str | None
    callback: str | None
    follow: bool
    cb_kwargs: Mapping[str, Any]
    process_request: str | None
    errback: str | None
    target: str  # the spider method its links' requests call

    def matches(self, url: str) -> bool:
        """Whether a link is this rule's: an allow pattern found in it, no deny pattern."""
        # Plain loops: called once per link and rule, and any() over a generator costs
        # more than the searches themselves.
        if self.allow:
            for pattern in self.allow:
                if pattern.search(url) is not None:
                    break
            else:
                return False
        for pattern in self.deny:  # noqa: SIM110 (a loop: see above)
            if pattern.search(url) is not None:
                return False
        return True


class CrawlSpider(Spider):
    """A spider that crawls by `rules`: the start pages' links go through them, then the
    links of every page a following rule reached. Override `parse_start_url` to make items
    of the start pages; do not override `parse`, which applies the rules."""

    rules: ClassVar[Sequence[Rule]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        rules = cls.__dict__.get("rules")
        if isinstance(rules, list | tuple):
            for index in range(len(rules)):
                name = f"_rule_{index}"
                if name not in cls.__dict__:
                    setattr(cls, name, _rule_method(index))

    def prepare(self, settings: Settings) -> None:
        """Compile the rules, refusing bad patterns, selectors and method names."""
        super().prepare(settings)
        for rule in _compiled(type(self)):
            where = f"spider {self.name!r}: rule {rule.index}"
            for what, name in (
                ("callback", rule.callback),
                ("process_request", rule.process_request),
                ("errback", rule.errback),
            ):
                if name is not None and not callable(getattr(self, name, None)):
                    raise UsageError(f"{where}: no {what} {name!r} on {type(self).__name__}")
            if not callable(getattr(self, rule.target, None)):  # rules set on an instance
                raise UsageError(f"{where}: rules must be declared on the spider class")

    def parse_start_url(self, response: Response) -> Any:
        """What to make of a start page besides following its links (nothing by default)."""
        return ()

    def parse(self, response: Response) -> Any:
        """The rules' links of a page; on a start page, `parse_start_url`'s output first."""
        if response.request.depth == 0 and _overrides(self, "parse_start_url"):
            start = self.parse_start_url(response)
            if inspect.isawaitable(start) or inspect.isasyncgen(start):
                return self._start_page(start, response)
            return self._start_page_sync(start, response)
        return self.follow_rules(response)

    def follow_rules(self, response: Response) -> Iterator[Request]:
        """A Request for each link of the page that a rule takes, the first rule that
        matches a link winning; each URL once."""
        rules = _compiled(type(self))
        links: dict[str | None, list[str]] = {}  # absolute URLs by region selector
        taken: set[str] = set()  # this page's only: a link goes to one rule, once
        for rule in rules:
            urls = links.get(rule.css)
            if urls is None:
                urls = links[rule.css] = _links(response, rule.css)
            callback = getattr(self, rule.target)
            errback = getattr(self, rule.errback) if rule.errback is not None else None
            for url in urls:
                if url in taken or not rule.matches(url):
                    continue
                taken.add(url)
                request = (
                    Request(url, callback)
                    if errback is None
                    else Request(url, callback, errback=errback)
                )
                if rule.process_request is None:
                    yield request
                elif (
                    changed := getattr(self, rule.process_request)(request, response)
                ) is not None:
                    yield changed

    async def _rule(self, index: int, response: Response) -> AsyncIterator[Any]:
        """A page a rule's link led to: the rule's callback, then (if it follows) the rules."""
        rule = _compiled(type(self))[index]
        if rule.callback is not None:
            async for output in _outputs(getattr(self, rule.callback)(response, **rule.cb_kwargs)):
                yield output
        if rule.follow:
            for request in self.follow_rules(response):
                yield request

    async def _start_page(self, start: Any, response: Response) -> AsyncIterator[Any]:
        async for output in _outputs(start):
            yield output
        for request in self.follow_rules(response):
            yield request

    def _start_page_sync(self, start: Any, response: Response) -> Iterator[Any]:
        if isinstance(start, dict | Request) or not isinstance(start, Iterable):
            if start is not None:
                yield start
        else:
            yield from start
        yield from self.follow_rules(response)


def _rule_method(index: int) -> Any:
    """The spider method `_rule_<index>`, which a stored request names as its callback."""

    def run(self: CrawlSpider, response: Response) -> AsyncIterator[Any]:
        return self._rule(index, response)

    run.__name__ = run.__qualname__ = f"_rule_{index}"
    run.__doc__ = f"A page reached through rule {index}."
    return run


def _overrides(spider: CrawlSpider, name: str) -> bool:
    return getattr(type(spider), name) is not getattr(CrawlSpider, name)


def _links(response: Response, css: str | None) -> list[str]:
    """The absolute URLs of the page's links, in the regions `css` selects (None: all)."""
    join = response.urljoin
    if css is None:
        nodes = response.css(LINKS)
    else:
        nodes = [node for region in response.css(css) for node in region.css(LINKS)]
    return [join((node.attributes.get("href") or "").strip()) for node in nodes]


async def _outputs(produced: Any) -> AsyncIterator[Any]:
    """What a callback made, one output at a time, whichever kind of callable it is."""
    if inspect.isawaitable(produced):
        produced = await produced
    if inspect.isasyncgen(produced):
        async for output in produced:
            yield output
    elif isinstance(produced, dict | Request) or not isinstance(produced, Iterable):
        if produced is not None:
            yield produced
    else:
        for output in produced:
            yield output


def _compiled(cls: type[CrawlSpider]) -> list[_Compiled]:
    """The class's rules, compiled once per class (UsageError if one is wrong)."""
    cached: list[_Compiled] | None = cls.__dict__.get(_COMPILED)
    if cached is None:
        rules = cls.rules
        if not isinstance(rules, list | tuple):
            raise UsageError(f"spider {cls.name!r}: rules must be a list of Rule")
        cached = [_compile(cls, index, rule) for index, rule in enumerate(rules)]
        setattr(cls, _COMPILED, cached)
    return cached


def _compile(cls: type[CrawlSpider], index: int, rule: Any) -> _Compiled:
    where = f"spider {cls.name!r}: rule {index}"
    if not isinstance(rule, Rule):
        raise UsageError(f"{where}: expected a Rule, got {type(rule).__name__}")
    for name in ("callback", "process_request", "errback"):
        value = getattr(rule, name)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: {name} must be a method name (a str), not {value!r}")
    follow = rule.callback is None if rule.follow is None else bool(rule.follow)
    if rule.callback is not None and not follow and not rule.cb_kwargs:
        target = rule.callback
    elif rule.callback is None and follow:
        target = "parse"
    else:
        target = f"_rule_{index}"
    return _Compiled(
        index,
        _patterns(where, "allow", rule.allow),
        _patterns(where, "deny", rule.deny),
        _selector(where, rule.css),
        rule.callback,
        follow,
        dict(rule.cb_kwargs or {}),
        rule.process_request,
        rule.errback,
        target,
    )


def _patterns(where: str, name: str, value: str | Sequence[str]) -> tuple[re.Pattern[str], ...]:
    patterns = [value] if isinstance(value, str | re.Pattern) else list(value)
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise UsageError(f"{where}: bad {name} pattern {pattern!r}: {exc}") from None
    return tuple(compiled)


def _selector(where: str, css: str | Sequence[str] | None) -> str | None:
    if css is None:
        return None
    selector = css if isinstance(css, str) else ", ".join(css)
    try:
        LexborHTMLParser("<p></p>").css(selector)
    except SelectolaxError as exc:
        raise UsageError(f"{where}: bad css selector {selector!r}: {exc}") from None
    return selector
