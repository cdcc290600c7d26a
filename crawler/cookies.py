"""Cookies: the sessions of a crawl, kept by the fetcher.

One `aiohttp.CookieJar` per session: the default one, and one per `meta["cookiejar"]`
key (Scrapy's name), so one crawl can be logged in as several accounts. Each try of a
request is sent with the Cookie header its jar gives for its URL (RFC 6265 domain, path
and Secure rules, as browsers apply them), and the Set-Cookie of each answer (a 3xx or
an error too) goes into that jar. `Request(cookies=...)` are put in the jar before the
request is sent, as if its host had set them. With `meta["dont_merge_cookies"]` the jar
is neither read nor written: the request carries its own cookies only.

The jars are created with `unsafe=True`, so hosts given by IP address (127.0.0.1) keep
their cookies too. Each cookie a request put in a jar becomes a `CookieRow`, kept under
the request's key (`changed`) until the engine carries it on the page's result into the
same transaction as the page; a resumed crawl `load()`s the rows back into the jars.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Iterable, Mapping
from http.cookies import CookieError, Morsel, SimpleCookie
from typing import Any, NamedTuple

import aiohttp
from yarl import URL

from crawler.http import Cookies, Request

DEFAULT_JAR = ""  # the session of requests without meta["cookiejar"]


class CookieRow(NamedTuple):
    """A cookie as the crawl database keeps it: one row per (jar, domain, path, name)."""

    jar: str  # DEFAULT_JAR, or the JSON of the meta["cookiejar"] key
    domain: str
    path: str
    name: str
    value: str
    host_only: int  # set without a Domain attribute: sent to that host only
    secure: int
    expires: float | None  # Unix time; None for a session cookie; past: deleted
    seq: int  # the order cookies were set in: a later row wins over an earlier one


def jar_name(key: Any) -> str:
    """The stored name of a meta["cookiejar"] key (JSON: 1 and "1" are two sessions)."""
    return DEFAULT_JAR if key is None else json.dumps(key, sort_keys=True, default=str)


class Jars:
    """The cookie jars of a crawl, by `meta["cookiejar"]` key. `record=True` keeps the
    rows each request's answers set, for the page's commit."""

    def __init__(self, *, record: bool = False) -> None:
        self._jars: dict[str, aiohttp.CookieJar] = {}
        self._default: aiohttp.CookieJar | None = None
        self._record = record
        self._seq = 0
        self.changed: dict[int, list[CookieRow]] = {}  # request key -> rows its answers set

    def _jar(self, name: str) -> aiohttp.CookieJar:
        jar = self._jars.get(name)
        if jar is None:  # made here, in the running event loop, as aiohttp wants
            jar = self._jars[name] = aiohttp.CookieJar(unsafe=True)
        return jar

    def _session(self, meta: Mapping[str, Any] | None) -> tuple[str, aiohttp.CookieJar] | None:
        """The request's jar and its name; None with dont_merge_cookies."""
        if meta:
            if meta.get("dont_merge_cookies"):
                return None
            key = meta.get("cookiejar")
            if key is not None:
                name = jar_name(key)
                return name, self._jar(name)
        jar = self._default
        if jar is None:
            jar = self._default = self._jar(DEFAULT_JAR)
        return DEFAULT_JAR, jar

    def header(self, request: Request, first_try: bool) -> str | None:
        """The Cookie header to send `request` with, or None. On its first try, the
        request's own cookies go into its jar first."""
        session = self._session(request.meta)
        if session is None:
            return _header(_morsels(request.cookies, request.url)) if request.cookies else None
        name, jar = session
        if request.cookies and first_try:
            self._take(request, name, jar, _morsels(request.cookies, request.url), request.url)
        if not len(jar):  # the common case: nothing to look up
            return None
        return _header(jar.filter_cookies(URL(request.url)).values())

    def receive(self, request: Request, url: str, set_cookies: list[str]) -> None:
        """Put the cookies an answer to `request` (from `url`) set into its jar."""
        session = self._session(request.meta)
        if session is None:
            return
        cookies = parse_set_cookies(set_cookies)
        if cookies:
            self._take(request, session[0], session[1], list(cookies.values()), url)

    def _take(
        self, request: Request, name: str, jar: aiohttp.CookieJar, cookies: list[Morsel[str]],
        url: str,
    ) -> None:  # fmt: skip
        where = URL(url)
        jar.update_cookies({m.key: m for m in cookies}, where)
        if self._record and request.key:
            rows = [row for m in cookies if (row := self._row(name, m, where)) is not None]
            if rows:
                self.changed.setdefault(request.key, []).extend(rows)

    def _row(self, jar: str, morsel: Morsel[str], url: URL) -> CookieRow | None:
        """The row of a cookie put in a jar, by the rules aiohttp's jar applies; None if
        the jar refuses it (a Domain the host is not in)."""
        host = (url.raw_host or "").lower()
        domain = morsel["domain"].lower()
        if domain.endswith("."):
            domain = ""
        domain = domain.removeprefix(".")
        if domain and domain != host and (_is_ip(host) or not host.endswith("." + domain)):
            return None
        path = morsel["path"]
        if not path.startswith("/"):
            path = url.path
            path = "/" + path[1 : path.rfind("/")] if path.startswith("/") else "/"
        self._seq += 1
        return CookieRow(
            jar, domain or host, path, morsel.key, morsel.value, int(not domain),
            int(bool(morsel["secure"])), _expires(morsel), self._seq,
        )  # fmt: skip

    def take(self, key: int) -> list[CookieRow] | None:
        """The rows the answers to request `key` set, handed over once (to its commit)."""
        return self.changed.pop(key, None)

    def load(self, rows: Iterable[CookieRow]) -> None:
        """Put saved cookies back in their jars (a resumed crawl); expired ones are dropped."""
        now = time.time()
        for row in rows:
            self._seq = max(self._seq, row.seq)
            if row.expires is not None and row.expires <= now:
                continue
            cookie: SimpleCookie = SimpleCookie()
            cookie[row.name] = row.value
            morsel = cookie[row.name]
            morsel["path"] = row.path
            if not row.host_only:
                morsel["domain"] = row.domain
            if row.secure:
                morsel["secure"] = True
            if row.expires is not None:
                morsel["max-age"] = str(max(1, math.ceil(row.expires - now)))
            url = URL.build(scheme="http", host=row.domain, path=row.path)
            self._jar(row.jar).update_cookies(cookie, url)
            if row.jar == DEFAULT_JAR:
                self._default = self._jar(DEFAULT_JAR)


def parse_set_cookies(values: list[str]) -> SimpleCookie:
    """The cookies of Set-Cookie header values; a value that does not parse is skipped."""
    cookies: SimpleCookie = SimpleCookie()
    for value in values:
        one: SimpleCookie = SimpleCookie()
        try:
            one.load(value)
        except CookieError:
            continue
        cookies.update(one)
    return cookies


def _morsels(cookies: Cookies, url: str) -> list[Morsel[str]]:
    """Request(cookies=...) as morsels: a dict of names and values, or Scrapy's list of
    dicts with "name", "value" and optional "domain", "path", "secure"."""
    jar: SimpleCookie = SimpleCookie()
    if isinstance(cookies, Mapping):
        for name, value in cookies.items():
            jar[str(name)] = str(value)
        return list(jar.values())
    for entry in cookies:
        name = str(entry["name"])
        jar[name] = str(entry["value"])
        for attribute in ("domain", "path"):
            if entry.get(attribute):
                jar[name][attribute] = str(entry[attribute])
        if entry.get("secure"):
            jar[name]["secure"] = True
    return list(jar.values())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _header(morsels: Iterable[Morsel[str]]) -> str | None:
    text = "; ".join(f"{m.key}={m.coded_value}" for m in morsels)
    return text or None


def _expires(morsel: Morsel[str]) -> float | None:
    """When a cookie ends, as Unix time (Max-Age wins over Expires); None: with the session."""
    max_age = morsel["max-age"]
    if max_age:
        try:
            seconds = int(max_age)
        except ValueError:
            seconds = None
        if seconds is not None:
            return 0.0 if seconds <= 0 else time.time() + seconds
    if morsel["expires"]:
        when = aiohttp.CookieJar._parse_date(morsel["expires"])  # the jar's own RFC 6265 parser
        if when is not None:
            return float(when)
    return None
