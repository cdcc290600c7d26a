"""The `crawler` command as tests run it: a real subprocess, what it printed, and the crawl
database it writes, read while it runs."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m crawler ARGS` to its end (2 minutes at most), blocking."""
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def crawler(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """`python -m crawler ARGS` to its end, without blocking the test's servers:
    (exit status, stdout, stderr)."""
    proc = await start(*args, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def start(*args: str, cwd: Path | None = None) -> asyncio.subprocess.Process:
    """`python -m crawler ARGS` started, for a test to signal or kill."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def count_items(db: Path) -> int:
    """Items stored in a crawl database so far (0 before it has its tables)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.OperationalError:  # the crawl has not made its tables yet
        return 0


async def wait_for_items(db: Path, at_least: int, proc: asyncio.subprocess.Process) -> None:
    """Until the crawl has stored `at_least` items or ended; 30 s at most."""
    for _ in range(600):
        if count_items(db) >= at_least or proc.returncode is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the crawl did not store {at_least} items in 30 s")
