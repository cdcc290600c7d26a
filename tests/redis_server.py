"""A redis-server of a test's own (Debian's binary), that the test can kill and start
again on its data.

It listens on a free port of 127.0.0.1 and keeps its append-only file in the test's
folder (`appendonly yes`, `appendfsync everysec`, no snapshots), so `restart()` after
`kill()` comes back with what was written up to about a second before the kill.
`REDIS_MISSING` says why a test using it is to be skipped.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS = shutil.which("redis-server")
REDIS_MISSING = (
    "no redis-server (apt-get install redis-server)"
    if REDIS is None
    else "the redis extra is not installed"
    if importlib.util.find_spec("redis") is None
    else ""
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Server:
    """One redis-server on a free port, its data in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The FRONTIER setting that names this server's database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the folder's data (its append-only file) and wait until it answers."""
        assert REDIS is not None
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.025)
        raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()}")

    def answers(self) -> bool:
        """Whether the server answers PING (and is done loading its data)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """SIGKILL, then start again on the same port and data."""
        self.kill()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    """A running redis-server for one test, killed after it."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = Server(folder)
    server.start()
    yield server
    server.kill()
