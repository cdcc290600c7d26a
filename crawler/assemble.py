"""Builds a crawl's parts from its spider and settings, and hands them to the engine.

The engine runs the stages; what they run on is chosen here: the frontier (SQLite, or a
worker's share of a crawl in Redis), the store, the parse stage with its pipelines, the
middleware and the cookie jars.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crawler.cookies import Jars
from crawler.engine import Engine
from crawler.errors import SpiderError, UsageError
from crawler.frontier import LocalFrontier
from crawler.frontiers import Restore, SQLiteFrontier
from crawler.hooks import Middlewares, Pipelines, instantiate
from crawler.http import Request
from crawler.items import schema_of
from crawler.parse import Parser
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.storage.sqlite import Store, StoredRequest, open_readonly
from crawler.urls import host_of


def settings_for(spider: Spider, overrides: Mapping[str, Any] | None) -> Settings:
    """The spider's settings with `overrides` on top, checked (its item_type too)."""
    if not spider.name:
        raise UsageError(f"spider {type(spider).__name__} has no name")
    settings = Settings.build(spider.custom_settings, overrides or {})
    item_type = getattr(spider, "item_type", None)
    if item_type is not None:
        schema_of(item_type)  # a dataclass or a TypedDict, whose annotations resolve
    return settings


def allowed_domains(spider: Spider, settings: Settings) -> list[str]:
    """The spider's domains; START_URL replaces its start URLs and joins its domains."""
    domains = list(spider.allowed_domains)
    if settings.start_url:
        spider.start_urls = [settings.start_url]
        if domains:
            domains.append(host_of(settings.start_url).rsplit(":", 1)[0])
    return domains


def parts(spider: Spider, settings: Settings) -> tuple[Parser, Middlewares]:
    """The parse stage (with the PIPELINES) and the MIDDLEWARES."""
    pipelines = Pipelines(instantiate("PIPELINES", settings.pipelines))
    middlewares = Middlewares(instantiate("MIDDLEWARES", settings.middlewares))
    return Parser(spider, pipelines), middlewares


def sqlite_engine(
    spider: Spider,
    db: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    refresh: float | None = None,
) -> Engine:
    """A crawl in one process, kept in the SQLite file `db`; with `refresh` (seconds),
    its pages done longer ago than that are queued again first."""
    settings = settings_for(spider, overrides)
    if settings.frontier != "sqlite":
        raise UsageError(f"setting FRONTIER={settings.frontier}: use `crawler crawl` for it")
    if refresh is not None:
        open_readonly(db).close()  # only a crawl database can be refreshed
    domains = allowed_domains(spider, settings)
    store = Store(db, spider.name)
    parser, middlewares = parts(spider, settings)
    # The sessions' cookies: each page's saved with its commit, loaded on resume.
    jars = Jars(record=True) if settings.cookies else None
    frontier = SQLiteFrontier(
        LocalFrontier(settings, domains), store, restorer(parser, db), jars, refresh
    )
    return Engine(spider, settings, frontier, parser, middlewares, store=store, jars=jars, db=db)


def restorer(parser: Parser, db: Path) -> Restore:
    """A stored request back as a Request, its callbacks the spider's methods."""

    def restored(row: StoredRequest) -> Request:
        try:
            callback, errback = parser.callback(row.callback), parser.callback(row.errback)
        except SpiderError as exc:
            raise UsageError(f"cannot resume {db}: {exc}") from None
        return Request.make(
            row.url, callback, row.method, row.headers, row.body, row.meta, row.priority,
            row.dont_filter, errback, row.depth, row.redirects, row.key, row.fp,
            row.cookies or None,
        )  # fmt: skip

    return restored
