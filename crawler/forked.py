"""Worker processes of `crawler crawl --workers K`, forked before the event loop starts.

A forked worker starts with what the collector has already imported and loaded (aiohttp,
redis-py, the spider): a new interpreter running `crawler work` spent about 0.45 to 0.6
CPU-seconds per process on that (bench/RESULTS.md, issue 13). Each worker waits, blocked
on a pipe, until the collector has checked its input and started the crawl in Redis:
`go()` lets it work; `cancel()` (or the collector's death) makes it exit 0 untouched.
It runs in a session of its own, so the terminal's Ctrl-C reaches the collector alone,
which stops the crawl for every worker and passes SIGINT on. A working worker whose
collector is gone (SIGKILLed: it could pass nothing on) stops as if by Ctrl-C within
ORPHAN_POLL seconds, so a rerun of the crawl does not find the old workers beside its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

_GO = b"g"
_POLL = 0.1  # seconds between two looks at a worker's exit, where pidfd_open is missing
ORPHAN_POLL = 1.0  # seconds between a worker's two looks at whether its collector is alive


class Forked:
    """One forked worker process, seen from the collector."""

    def __init__(self, pid: int, go: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # as asyncio's: -N when signal N ended it
        self._go: int | None = go  # the pipe's end the worker waits on

    def go(self) -> None:
        """Let the worker work."""
        if self._go is not None:
            with contextlib.suppress(OSError):  # it exited already: wait() says how
                os.write(self._go, _GO)
            self.cancel()

    def cancel(self) -> None:
        """A worker not yet let go exits 0; one working is not affected."""
        if self._go is not None:
            os.close(self._go)
            self._go = None

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    async def wait(self) -> int:
        """Its exit status, once it has exited (reaped once, however many wait)."""
        while self.returncode is None:
            try:
                fd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):  # not Linux 5.3+: look now and then
                fd = None
            if fd is None:
                await asyncio.sleep(_POLL)
            else:
                try:
                    await _readable(fd)
                finally:
                    os.close(fd)
            self._reap()
        return self.returncode

    def _reap(self) -> None:
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: its status is lost
            self.returncode = 1
            return
        if pid != 0:
            self.returncode = os.waitstatus_to_exitcode(status)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def fork(count: int, work: Callable[[], int]) -> list[Forked]:
    """`count` processes that each run `work()` once let go, and exit with what it returns.
    Call it before any thread or event loop is started."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # objects the workers share stay untouched by their collections: not copied
    parent = os.getpid()
    forked: list[Forked] = []
    try:
        for _ in range(count):
            wait_end, go_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                for other in forked:  # a sibling's go end held here would keep it waiting
                    other.cancel()
                os.close(go_end)
                _child(wait_end, work, parent)
            os.close(wait_end)
            forked.append(Forked(pid, go_end))
    finally:
        gc.unfreeze()
    return forked


def _child(wait_end: int, work: Callable[[], int], parent: int) -> None:
    code = 1
    try:
        os.setsid()
        told = os.read(wait_end, 1)
        os.close(wait_end)
        if told == _GO:
            threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
        code = work() if told == _GO else 0
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _stop_when_orphaned(parent: int) -> None:
    """SIGINT to this worker (its Ctrl-C: pages in flight finished, the rest given back)
    once `parent`, its collector, is gone: the worker is then another process's child."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL)
    os.kill(os.getpid(), signal.SIGINT)
