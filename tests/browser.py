"""Real parts for the dashboard tests: `crawler serve` as a subprocess, and Debian's
chromium driven by Playwright (never a downloaded browser).

Chromium gets flags that keep it off the network (the machine has only loopback) and a
fresh profile folder each time. Without a chromium binary or Playwright, `browser()`
skips the test with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTEFACTS = Path(__file__).with_name("artefacts")  # screenshots; ignored by git


def chromium_path() -> str | None:
    """Debian's chromium binary, or None."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).is_file() else None


@asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Any]:
    """A Playwright BrowserContext on a fresh chromium profile in `profile`."""
    binary = chromium_path()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=binary, headless=True, args=CHROMIUM_FLAGS,
            accept_downloads=True, viewport={"width": 1200, "height": 800},
        )  # fmt: skip
        try:
            yield context
        finally:
            await context.close()


@asynccontextmanager
async def served(db: Path) -> AsyncIterator[str]:
    """`crawler serve db` on a free port, in a subprocess; yields its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", "serve", str(db), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if "http://" not in line:
            error = (await proc.stderr.read()).decode()
            raise AssertionError(f"crawler serve did not start: {line!r} {error!r}")
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def status_of(output: str) -> dict[str, str]:
    """`crawler status` output as a dict of its lines."""
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def counts_of(text: str) -> dict[str, int]:
    """'404: 1, 500: 2' as {'404': 1, '500': 2}; 'none' as {}."""
    if text.strip() == "none":
        return {}
    return {k: int(v) for k, v in (part.rsplit(": ", 1) for part in text.split(", "))}


def number(text: str | None) -> int:
    """A number as the dashboard shows it ('1,234')."""
    assert text is not None
    return int(text.strip().replace(",", ""))
