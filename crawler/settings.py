"""Settings: the table in the README, parsed and validated into one frozen record.

Sources, later wins: defaults, the spider's `custom_settings`, `-s KEY=VALUE`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from crawler import __version__
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
    proxy: tuple[str, ...] = ()  # proxy URLs, rotated through (crawler/proxies.py)
    autothrottle: bool = False  # each host's delay follows its latency (crawler/throttle.py)
    autothrottle_max_delay: float = 60.0
    autothrottle_target_concurrency: float = 1.0

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


def _pipelines(key: str, raw: Any) -> tuple[Any, ...]:
    return resolve_components(key, raw, PIPELINE_METHODS)


def _middlewares(key: str, raw: Any) -> tuple[Any, ...]:
    return resolve_components(key, raw, MIDDLEWARE_METHODS)


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
    "proxy": _proxy,
    "autothrottle": _bool,
    "autothrottle_max_delay": _float,
    "autothrottle_target_concurrency": _positive_float,
}
