"""The Redis frontier: one crawl's seen-set, host queues, leases and results in Redis,
shared by worker processes on any machine.

Each step that must be atomic is one Lua script (`crawler.redislua`, where the key
layout is), run with Redis's own clock. A worker `lease`s requests of hosts that are due
now, under a fencing token and an expiry it `renew`s while the page is in flight, then
`finish`es the page: the token is checked, the result goes to the `results` stream for
the collector, the page's new requests are admitted and the host slot is freed, in one
step. A finish whose lease expired or was superseded is refused and counted; an expired
lease's request goes back to the front of its host's queue (`reap`, which `lease` runs
too). PER_HOST, DELAY, Crawl-delay and Retry-After hold across every process.

A crawl is created once (`begin`: its spider, MAX_PAGES, whether hosts wait for their
robots.txt, and the start requests seeded) and joined by every later process; the
collector sets its state (`set_state`) for the workers to read (`meta`). Workers report
themselves with `heartbeat`, for `crawler status` (`workers`).

Not imported by the default (SQLite) crawl: it needs the `redis` extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from crawler import redislua, wire
from crawler.errors import UsageError
from crawler.http import Request
from crawler.urls import fingerprint, host_of

log = logging.getLogger(__name__)

T = TypeVar("T")
ADMIT_BATCH = 500  # requests per admit script: a script blocks Redis while it runs
FINISH_BATCH = 256  # pages per finish_many script, likewise
PATIENCE = 300.0  # seconds Redis may stay unreachable before a call gives up
_MAX_BACKOFF = 2.0
_RESULTS = "results"
_SCRIPTS = (
    "ADMIT", "LEASE", "RENEW", "FINISH", "FINISH_MANY", "HOLD", "REAP", "GIVE_BACK", "ROBOTS",
    "SET_ROBOTS", "COUNTS", "BEGIN", "SET_STATE", "HEARTBEAT", "WORKERS",
)  # fmt: skip


class Lease(NamedTuple):
    """A request handed to one worker under fencing token `token`, until its lease
    expires (lease_seconds after the hand-out or the last `renew`)."""

    token: int
    request: Request
    host: str
    blob: bytes  # the request as stored, for the collector's record


@dataclass(frozen=True, slots=True)
class Leased:
    """What `lease` handed out, and when to ask again."""

    leases: list[Lease]
    stamp: int  # Redis's time of the hand-out, microseconds since the epoch
    wait: float | None  # seconds until the next host is due; None: none is ready
    reason: str = ""  # why nothing was handed out: "backlog" until the collector catches
    # up, "limit" while finished and leased pages make MAX_PAGES


@dataclass(frozen=True, slots=True)
class Finished:
    """The answer to `finish`: whether the lease held, and which new requests were new."""

    ok: bool
    stamp: int  # Redis's time of the finish, microseconds since the epoch
    new: list[bool]  # per new request (`finish`); empty from `finish_many`
    again: bool = False  # a retried finish whose first try had gone through
    admitted: int = 0  # how many new requests were new


@dataclass(frozen=True, slots=True)
class Counts:
    """Where the crawl stands in Redis."""

    queued: int
    leased: int
    seen: int
    results: int  # finished pages waiting for the collector
    finished: int
    refused: int  # finishes under a lost or expired lease
    expired: int  # leases that ran out and were queued again
    max_pages: int = 0  # the crawl's bound on finished pages (0: none)

    @property
    def complete(self) -> bool:
        """Nothing leased, and nothing queued or MAX_PAGES finished: the crawl is done."""
        if self.leased:
            return False
        return self.queued == 0 or 0 < self.max_pages <= self.finished


@dataclass(frozen=True, slots=True)
class Begun:
    """What `begin` did: created (and seeded) the crawl, or joined it; its token."""

    created: bool
    token: str


@dataclass(frozen=True, slots=True)
class Meta:
    """A crawl's metadata in Redis."""

    spider: str
    token: str  # random, set when the crawl was created: tells one crawl of an id from another
    state: str  # "running", "stopped" (workers stop), "ended" (workers exit)
    max_pages: int  # 0: no bound
    probe: bool  # a host has one request in flight until its robots.txt is known
    created: float  # Redis's time of the creation, seconds since the epoch
    format: int  # of its requests' blobs (crawler/wire.py FORMAT; 1 if not recorded)


class Robots(NamedTuple):
    """A host's robots.txt as the crawl knows it: `text` once stored; else `fetch` says
    whether this caller is the one to fetch it (the others wait and ask again)."""

    text: str | None
    fetch: bool


class Result(NamedTuple):
    """One finished page from the results stream."""

    id: str
    token: int
    host: str
    request: bytes  # as stored: `wire.decode(request, host)`
    result: bytes
    new: int


class RedisFrontier:
    """One crawl's frontier in Redis, shared by every process that opens it."""

    def __init__(
        self,
        client: Redis,
        crawl_id: str,
        per_host: int,
        delay: float,
        lease_seconds: float = 10.0,
        max_results: int = 10_000,
        resolve: wire.Resolve | None = None,
        patience: float = PATIENCE,
    ) -> None:
        if not crawl_id or "{" in crawl_id or "}" in crawl_id:
            raise UsageError(f"crawl id {crawl_id!r}: expected a non-empty name without braces")
        self.client = client
        self.crawl_id = crawl_id
        self.prefix = f"crawl:{{{crawl_id}}}:"
        self.lease_seconds = lease_seconds
        self._config = (per_host, round(delay * 1e6), round(lease_seconds * 1e6), max_results)
        self.resolve = resolve  # a callback's name -> the spider's method
        self._patience = patience
        self._outage: float | None = None  # when Redis was first found unreachable, if it is
        self._scripts = {name: client.register_script(getattr(redislua, name)) for name in _SCRIPTS}

    async def begin(
        self, spider: str, start: Sequence[Request], max_pages: int, probe: bool
    ) -> Begun:
        """Create the crawl and seed it with `start`, once however many collectors race to;
        a crawl of the same spider is joined (set running again, bounded by this run's
        `max_pages`) as it is. A crawl of another spider under this id is a UsageError."""
        token = secrets.token_hex(8)
        first = _packed(start[:ADMIT_BATCH])
        reply = await self._run("BEGIN", spider, token, max_pages, int(probe), wire.FORMAT, first)
        status, value = _text(reply[0]), _text(reply[1])
        if status == "other":
            raise UsageError(
                f"crawl {self.crawl_id!r} in Redis belongs to spider {value!r}, not {spider!r};"
                " use -s CRAWL_ID=..."
            )
        if status == "format":
            raise UsageError(self.format_problem(int(value)))
        if status == "created" and len(start) > ADMIT_BATCH:  # the rest in batches
            await self.admit(start[ADMIT_BATCH:])
        return Begun(status == "created", value)

    async def meta(self) -> Meta | None:
        """The crawl's metadata, or None if `begin` has not created it."""
        raw = await self._retrying(lambda: self.client.hgetall(self.prefix + "meta"))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "spider" not in fields:
            return None
        return Meta(
            fields["spider"], fields.get("token", ""), fields.get("state", ""),
            int(fields.get("max_pages", 0)), fields.get("probe") == "1",
            int(fields.get("created", 0)) / 1e6, int(fields.get("format", 1)),
        )  # fmt: skip

    def format_problem(self, found: int) -> str:
        """Why a crawl whose requests are stored in format `found` cannot be joined."""
        return (
            f"crawl {self.crawl_id!r} in Redis was written by another version of the crawler"
            f" (requests in format {found}; this one reads {wire.FORMAT}): finish it with"
            " that version, or start anew under -s CRAWL_ID=..."
        )

    async def set_state(self, state: str) -> None:
        """Set the crawl "running", "stopped" (workers stop) or "ended" (workers exit);
        nothing if the crawl does not exist."""
        await self._run("SET_STATE", state)

    async def heartbeat(self, worker: str, info: Mapping[str, Any]) -> None:
        """Record that `worker` is alive, with `info` (host, pid, pages done...: anything
        JSON takes) and Redis's time, for `workers`."""
        text = json.dumps(dict(info), separators=(",", ":"), default=str)
        await self._run("HEARTBEAT", worker, text)

    async def workers(self, within: float = 30.0) -> list[dict[str, Any]]:
        """The info of the workers heard from within `within` seconds, by name, each with
        its "worker" name, "heartbeat" (seconds since the epoch) and "age" (seconds ago);
        older entries are deleted."""
        reply = await self._run("WORKERS", round(within * 1e6))
        now = int(reply[0])
        found = []
        for i in range(1, len(reply), 3):
            beat = int(reply[i + 1])
            info = json.loads(reply[i + 2])
            info.update(worker=_text(reply[i]), heartbeat=beat / 1e6, age=(now - beat) / 1e6)
            found.append(info)
        return sorted(found, key=lambda info: str(info["worker"]))

    async def leave(self, worker: str) -> None:
        """Remove `worker` from the registry (it exits)."""
        await self._retrying(lambda: self.client.hdel(self.prefix + "workers", worker))

    async def admit(self, requests: Sequence[Request]) -> list[bool]:
        """Add requests not seen before to their hosts' queues; for each, whether it was
        new. A `dont_filter` request is always added and never enters the seen-set."""
        new: list[bool] = []
        for start in range(0, len(requests), ADMIT_BATCH):
            flags = await self._run("ADMIT", _packed(requests[start : start + ADMIT_BATCH]))
            new.extend(bool(flag) for flag in flags)
        return new

    async def lease(self, worker: str, n: int, released: Sequence[int] = ()) -> Leased:
        """Up to `n` requests of hosts due now, each under its own lease; first, the
        host slots of the `released` leases (their fetches are over) are freed."""
        reply = await self._run("LEASE", worker, n, *released)
        status, stamp, wait = _text(reply[0]), int(reply[1]), int(reply[2])
        leases = []
        for i in range(3, len(reply), 3):
            host = _text(reply[i + 1])
            blob = bytes(reply[i + 2])
            request = wire.decode(blob, host, self.resolve)
            leases.append(Lease(int(reply[i]), request, host, blob))
        reason = "" if status == "ok" else status
        return Leased(leases, stamp, None if wait < 0 else wait / 1e6, reason)

    async def renew(self, tokens: Sequence[int]) -> list[bool]:
        """Extend leases still held by another lease time; False for each one lost."""
        if not tokens:
            return []
        return [bool(flag) for flag in await self._run("RENEW", *tokens)]

    async def finish(
        self,
        token: int,
        result: bytes,
        new_requests: Sequence[Request] = (),
        leased: bytes = b"",
    ) -> Finished:
        """Record a page's result for the collector, admit the requests it found and free
        its host slot, if lease `token` still holds (for the request `leased`, as the
        lease gave it, when given); else refuse (and count it)."""
        packed = _packed(new_requests)
        return _finished(await self._run("FINISH", token, result, leased, packed))

    async def finish_many(
        self, pages: Sequence[tuple[Lease, bytes, Sequence[Request]]]
    ) -> list[Finished]:
        """`finish` for each (lease, result, new requests), its request checked, in one
        script (FINISH_BATCH pages at most per call): the answers say how many new
        requests were new, not which. Sent again after a lost reply: a finish that had
        gone through answers "again"."""
        answers: list[Finished] = []
        for start in range(0, len(pages), FINISH_BATCH):
            args: list[bytes | int] = []
            for lease, result, new in pages[start : start + FINISH_BATCH]:
                args += (lease.token, result, lease.blob, _packed(new))
            reply = await self._run("FINISH_MANY", *args)
            stamp = int(reply[0])
            for i in range(1, len(reply), 2):
                status = _text(reply[i])
                ok = status in ("ok", "again")
                answers.append(Finished(ok, stamp, [], status == "again", int(reply[i + 1])))
        return answers

    async def hold(self, host: str, seconds: float, reason: str = "Retry-After") -> None:
        """Hand out nothing of `host` for `seconds` from now; with reason "Crawl-delay",
        keep `seconds` between its hand-outs from now on (if more than DELAY)."""
        await self._run("HOLD", host, round(seconds * 1e6), reason)

    async def reap(self, limit: int = 1000) -> int:
        """Queue again the requests of up to `limit` expired leases; how many there were."""
        return int(await self._run("REAP", limit))

    async def give_back(self, tokens: Sequence[int]) -> int:
        """Leases a worker will not start (it stops): their requests go back to the front
        of their hosts' queues at once; how many were still held."""
        if not tokens:
            return 0
        return int(await self._run("GIVE_BACK", *tokens))

    async def robots(self, host: str, worker: str) -> Robots:
        """The host's robots.txt if stored, or whether this caller is to fetch it."""
        reply = await self._run("ROBOTS", host, worker)
        kind = _text(reply[0])
        if kind == "text":
            return Robots(bytes(reply[1]).decode(), False)
        return Robots(None, kind == "fetch")

    async def set_robots(self, host: str, text: str) -> None:
        """Store the host's robots.txt for every process of the crawl (store "" for one
        that is missing or failed): the host is known now, and with `probe` its other
        requests may go out."""
        await self._run("SET_ROBOTS", host, text)

    async def counts(self) -> Counts:
        """Queued, leased, seen, results waiting, the finish and lease counters, and
        MAX_PAGES."""
        return Counts(*(int(v) for v in await self._run("COUNTS")))

    async def done(self) -> bool:
        """Whether nothing is leased, and nothing queued or MAX_PAGES pages finished."""
        return (await self.counts()).complete

    async def results(
        self, after: str = "0-0", count: int = 100, block_ms: int | None = None
    ) -> list[Result]:
        """Finished pages for the collector, oldest first: those after stream id `after`
        ("0-0": every one still in the stream, after a restart too). Waits up to
        `block_ms` for one when there are none."""
        key = self.prefix + _RESULTS

        async def read() -> Any:
            return await self.client.xread({key: after}, count, block_ms)

        found: list[Result] = []
        for _, entries in await self._retrying(read) or ():
            for entry_id, fields in entries:
                found.append(
                    Result(
                        _text(entry_id), int(fields[b"token"]), _text(fields[b"host"]),
                        fields[b"request"], fields[b"result"], int(fields[b"new"]),
                    )
                )  # fmt: skip
        return found

    async def ack(self, last: str) -> None:
        """The collector has stored every result up to stream id `last`: they leave the
        stream, which holds only what waits (its length is what `max_results` bounds).
        One trim, whatever their number: stream ids only grow, and the collector reads
        them in order, so every id up to `last` was read."""
        millis, _, seq = last.partition("-")
        above = f"{millis}-{int(seq) + 1}"
        key = self.prefix + _RESULTS
        await self._retrying(lambda: self.client.xtrim(key, minid=above, approximate=False))

    async def _run(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        return await self._retrying(lambda: script(keys=[self.prefix], args=[*self._config, *args]))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, tried again with backoff while Redis is unreachable or loading its
        data (a restart), for up to `patience` seconds; one log line per outage."""
        since: float | None = None
        pause = 0.05
        while True:
            try:
                result = await call()
            except MaxConnectionsError:  # this process's pool is full: not an outage
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                now = time.monotonic()
                if since is None:
                    since = now
                    if self._outage is None:  # the calls under way share one line
                        self._outage = now
                        log.warning("Redis unreachable (%s); retrying", exc)
                elif now - since > self._patience:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_BACKOFF)
                continue
            if self._outage is not None:
                log.info("Redis is back after %.1f s", time.monotonic() - self._outage)
                self._outage = None
            return result


_HEAD = struct.Struct(">BHiI")  # a packed request's head, as admit() in redislua.py reads it


def _packed(requests: Sequence[Request]) -> bytes:
    """The requests as admit()'s one argument, each blob led by its fingerprint. A
    `dont_filter` request skips the seen-set (no fingerprint) and gets a random uid in its
    blob instead: its identity, kept while it is leased again."""
    parts: list[bytes] = []
    head = _HEAD.pack
    for r in requests:
        host = host_of(r.url)
        if r.dont_filter:
            fp, blob = b"", wire.encode(r, host, os.urandom(wire.IDENT))
        else:
            fp = r.fp or fingerprint(r.method, r.url, r.body)
            blob = wire.encode(r, host, fp)
        name = host.encode()
        parts += (head(len(fp), len(name), r.priority, len(blob)), fp, name, blob)
    return b"".join(parts)


def _finished(reply: Any) -> Finished:
    status, stamp = _text(reply[0]), int(reply[1])
    flags = [bool(flag) for flag in reply[2:]]
    return Finished(status in ("ok", "again"), stamp, flags, status == "again", sum(flags))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
