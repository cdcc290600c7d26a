"""A client of the crawl's Redis, checked before anything is done with it.

`connect` answers with a client once Redis answers PING, or with one line that names
the URL (its password hidden) and says what is wrong: a malformed URL, a server that
refuses or does not answer, or one older than the scripts need (6.2).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import AuthenticationError, DataError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from crawler.errors import UsageError

_pack: Callable[[Any], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # the `redis` extra brings it; without it, redis-py packs in Python
    _pack = None

_MAX_BACKOFF = 2.0
MIN_VERSION = (6, 2)  # the scripts use LPOP with a count, SMISMEMBER and ZMSCORE


async def connect(url: str, patience: float = 5.0) -> Redis:
    """A client of the Redis at `url` (redis://HOST:PORT/N), once it answers PING. A
    malformed URL, or a Redis that does not answer within `patience` seconds, is a
    UsageError of one line naming the URL."""
    shown = _shown(url)
    problem = _url_problem(url)
    if problem:
        raise UsageError(f"FRONTIER={shown}: {problem}")
    try:
        client = Redis.from_url(url, **_packing(url))
    except ValueError as exc:
        raise UsageError(f"FRONTIER={shown}: {exc}") from None
    try:
        async with asyncio.timeout(patience):
            await _ping(client, patience)
            version = await _version(client)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise UsageError(f"FRONTIER={shown}: cannot reach Redis ({_reason(exc)})") from exc
    except (TypeError, ValueError) as exc:  # a query option the client does not take
        await client.aclose()
        raise UsageError(f"FRONTIER={shown}: an option Redis does not take ({exc})") from None
    except BaseException:
        await client.aclose()
        raise
    if version < MIN_VERSION:
        await client.aclose()
        needed = ".".join(map(str, MIN_VERSION))
        found = ".".join(map(str, version))
        raise UsageError(f"FRONTIER={shown}: Redis {found}; the crawl needs {needed} or later")
    return client


class PackedConnection(Connection):
    """A connection whose commands hiredis packs, in C. redis.asyncio packs every
    argument in Python (its blocking client uses hiredis's packer, this one does not):
    a worker's finish of 20 pages is about a hundred arguments."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return _packed_command(args)


def _packed_command(args: tuple[Any, ...]) -> list[bytes]:
    """As redis-py's packer: a command name of several words ("SCRIPT LOAD") is split;
    a bytearray is sent as bytes; other types are a DataError."""
    assert _pack is not None
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    try:
        return [_pack(args)]
    except TypeError:
        pass
    try:
        return [_pack(tuple(bytes(a) if isinstance(a, bytearray) else a for a in args))]
    except TypeError as exc:
        raise DataError(str(exc)) from None


def _packing(url: str) -> dict[str, Any]:
    """The client's connection class: one hiredis packs for, where hiredis is there
    (redis:// only: for rediss:// redis-py picks its own TLS connection class)."""
    if _pack is None or urlsplit(url).scheme != "redis":
        return {}
    return {"connection_class": PackedConnection}


async def _version(client: Redis) -> tuple[int, ...]:
    """The server's version, as numbers (0.0 where INFO does not say)."""
    info = await client.info("server")
    found = re.findall(r"\d+", str(info.get("redis_version", "")))[:3]
    return tuple(int(part) for part in found) or (0, 0)


async def _ping(client: Redis, patience: float) -> None:
    """PING until it is answered, through refusals (a Redis still starting)."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            await client.ping()
            return
        except AuthenticationError:
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_BACKOFF)


def _url_problem(url: str) -> str:
    """What is wrong with a Redis URL ("" if nothing)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return "expected redis://HOST:PORT/N"
    try:
        port = parts.port
    except ValueError:
        return "the port is not a number from 1 to 65535"
    if not parts.hostname:
        return "no host: expected redis://HOST:PORT/N"
    if port == 0:
        return "the port is not a number from 1 to 65535"
    if not re.fullmatch(r"/?|/\d+", parts.path):
        return f"the database {parts.path[1:]!r} is not a number"
    return ""


def _shown(url: str) -> str:
    """The URL with its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _reason(exc: BaseException) -> str:
    """The cause of a failed connection in a few words."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, RedisError):
        return "no answer"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return os.strerror(cause.errno)  # "Connection refused", not asyncio's wording
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    text = str(exc).rstrip(".")
    return text.rsplit(". ", 1)[-1] if ". " in text else text or type(exc).__name__
