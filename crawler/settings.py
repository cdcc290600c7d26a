"""Settings: the table in the README, parsed and validated into one frozen record.

Sources, later wins: defaults, the spider's `custom_settings`, `-s KEY=VALUE`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any

from crawler import __version__
from crawler.dates import parse_when
from crawler.errors import UsageError
from crawler.hooks import MIDDLEWARE_METHODS, PIPELINE_METHODS, resolve_components

DEFAULT_USER_AGENT = f"crawler/{__version__} (+https://pypi.org/project/crawler/)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a crawl, validated."""

    concurrency: int = 64
    per_host: int = 8
    delay: float = 0.0
    retries: int = 3
    timeout: float = 30.0
    robots: bool = True
    max_pages: int = 0
    max_depth: int = 0
    max_body: int = 10 * 1024 * 1024
    user_agent: str = DEFAULT_USER_AGENT
    start_url: str | None = None
    frontier: str = "sqlite"
    cache: str | None = None
    cache_expire: float = 0.0
    progress_every: float = 10.0
    pipelines: tuple[Any, ...] = ()  # classes or instances with process_item
    middlewares: tuple[Any, ...] = ()  # classes or instances with process_request/_response/_error
    sitemap_since: datetime | None = None  # sitemap <url>s last modified before it are skipped
    cookies: bool = True
    default_headers: Mapping[str, str] = field(default_factory=dict)
    http_auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # host -> (user, pass)
    proxy: tuple[str, ...] = ()  # proxy URLs, rotated through (crawler/proxies.py)
    autothrottle: bool = False  # each host's delay follows its latency (crawler/throttle.py)
    autothrottle_max_delay: float = 60.0
    autothrottle_target_concurrency: float = 1.0
    crawl_id: str | None = None  # the crawl's name in Redis (default: the spider's name)
    lease: float = 10.0  # seconds a Redis worker holds a request before it is leased again

    @classmethod
    def build(cls, *layers: Mapping[str, Any]) -> Settings:
        """Settings from layers of KEY -> value (strings or typed values), later layers winning."""
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, raw in layer.items():
                name = _check_key(key)
                merged[name] = _PARSERS[name](key.upper(), raw)
        return cls(**merged)


def _check_key(key: str) -> str:
    name = key.strip().lower()
    if name in _PARSERS:
        return name
    known = [f.name.upper() for f in fields(Settings)]
    close = difflib.get_close_matches(key.strip().upper(), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
    raise UsageError(f"unknown setting {key!r}{hint}")


def _int(low: int) -> Callable[[str, Any], int]:
    def parse(key: str, raw: Any) -> int:
        try:
            value = int(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or value < low:
            raise UsageError(f"setting {key}={raw!r}: expected a whole number >= {low}")
        return value

    return parse


def _float(key: str, raw: Any) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else -1.0
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"setting {key}={raw!r}: expected a number of seconds >= 0")
    return value


def _positive_float(key: str, raw: Any) -> float:
    value = _float(key, raw)
    if value == 0:
        raise UsageError(f"setting {key}={raw!r}: expected a number of seconds > 0")
    return value


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise UsageError(f"setting {key}={raw!r}: expected true or false")


def _text(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise UsageError(f"setting {key}={raw!r}: expected a non-empty string")
    return raw.strip()


def _start_url(key: str, raw: Any) -> str:
    from crawler.urls import check_url

    url = _text(key, raw)
    problem = check_url(url)
    if problem:
        raise UsageError(f"setting {key}={raw!r}: {problem}")
    return url


def _frontier(key: str, raw: Any) -> str:
    value = _text(key, raw)
    if value == "sqlite" or value.startswith("redis://"):
        return value
    raise UsageError(f"setting {key}={raw!r}: expected sqlite or redis://HOST:PORT/DB")


def _crawl_id(key: str, raw: Any) -> str:
    value = _text(key, raw)
    if "{" in value or "}" in value or any(c.isspace() for c in value):
        raise UsageError(f"setting {key}={raw!r}: expected a name without braces or spaces")
    return value


def _pipelines(key: str, raw: Any) -> tuple[Any, ...]:
    return resolve_components(key, raw, PIPELINE_METHODS)


def _middlewares(key: str, raw: Any) -> tuple[Any, ...]:
    return resolve_components(key, raw, MIDDLEWARE_METHODS)


def _since(key: str, raw: Any) -> datetime:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        raw = raw.isoformat()
    when = raw if isinstance(raw, datetime) else parse_when(raw) if isinstance(raw, str) else None
    if when is None:
        raise UsageError(
            f"setting {key}={raw!r}: expected an ISO date (2024-05-31) or date and time "
            "(2024-05-31T12:00:00Z)"
        )
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _json_or(key: str, raw: Any) -> Any:
    """A dict as given in custom_settings, or its JSON text from the command line."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            raise UsageError(f"setting {key}={raw!r}: expected a JSON object") from None
    return raw


def _default_headers(key: str, raw: Any) -> dict[str, str]:
    value = _json_or(key, raw)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f"setting {key}={raw!r}: expected a dict of header names to strings")
    if any(k.strip().lower() == "user-agent" for k in value):
        raise UsageError(f"setting {key}: set User-Agent with USER_AGENT")
    return {k.strip(): v for k, v in value.items()}


def _http_auth(key: str, raw: Any) -> dict[str, tuple[str, str]]:
    value = _json_or(key, raw)
    expected = f"setting {key}={raw!r}: expected a dict of hosts to (user, password)"
    if not isinstance(value, Mapping):
        raise UsageError(expected)
    auth: dict[str, tuple[str, str]] = {}
    for host, pair in value.items():
        if not isinstance(host, str) or not host.strip() or "/" in host:
            raise UsageError(expected)
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise UsageError(expected)
        if not all(isinstance(part, str) for part in pair) or ":" in pair[0]:
            raise UsageError(expected)
        auth[host.strip().lower()] = (pair[0], pair[1])
    return auth


def _proxy(key: str, raw: Any) -> tuple[str, ...]:
    from crawler.proxies import proxy_problem

    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list | tuple) or not raw:
        raise UsageError(f"setting {key}={raw!r}: expected a proxy URL or a list of them")
    urls = tuple(_text(key, url) for url in raw)
    for url in urls:
        problem = proxy_problem(url)
        if problem:
            raise UsageError(f"setting {key}={url!r}: {problem}")
    return urls


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "concurrency": _int(1),
    "per_host": _int(1),
    "delay": _float,
    "retries": _int(0),
    "timeout": _positive_float,
    "robots": _bool,
    "max_pages": _int(0),
    "max_depth": _int(0),
    "max_body": _int(1),
    "user_agent": _text,
    "start_url": _start_url,
    "frontier": _frontier,
    "cache": _text,
    "cache_expire": _float,
    "progress_every": _positive_float,
    "pipelines": _pipelines,
    "middlewares": _middlewares,
    "sitemap_since": _since,
    "cookies": _bool,
    "default_headers": _default_headers,
    "http_auth": _http_auth,
    "proxy": _proxy,
    "autothrottle": _bool,
    "autothrottle_max_delay": _float,
    "autothrottle_target_concurrency": _positive_float,
    "crawl_id": _crawl_id,
    "lease": _positive_float,
}
