"""Serves a generated site with nginx, touching no system configuration.

nginx comes from Debian (`apt-get install -y nginx`); this module installs nothing. It
writes an nginx.conf into a folder of its own (one worker, access log off, keep-alive,
`stub_status` at /nginx_status on the same port), starts `nginx -p PREFIX -c CONF` in the
foreground as a child, pinned to core 0 with `taskset` where there are two or more cores,
and stops it by its pid. `Nginx.requests()` reads stub_status's request counter. Targets 2
and 3 turn on an unbuffered access log of request timings, read by `Nginx.log_lines()`.

For target 2 (`hosts`), one server block per host on 127.0.0.X:PORT, each with its own
folder; the slow host's requests first wait on a 0.5 s `auth_request` answered by a
small asyncio server in a child process (subrequests are not counted by stub_status).

    python bench/serve.py single --pages 20000 --port 8181     # generates, serves, Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STATUS_PATH = "/nginx_status"
SLOW_SECONDS = 0.5

_MAIN = """\
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    types {{ text/html html; text/plain txt; }}
    default_type application/octet-stream;
    charset utf-8;
    log_format timing '$msec $request_time $server_addr $request_uri $status';
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{servers}
}}
"""

_SERVER = """\
    server {{
        listen {host}:{port};
        root {root};
        index index.html;
        location = {status} {{ stub_status; }}
        location /u/ {{ try_files /leaf.html =404; }}
{extra}    }}
"""

_SLOW = """\
        auth_request /_delay;
        location = /_delay {{
            internal;
            proxy_pass http://127.0.0.1:{delay_port}/;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
"""

_DELAY_SERVER = f"""
import asyncio, sys
async def answer(reader, writer):
    try:
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            await asyncio.sleep({SLOW_SECONDS})
            writer.write(b"HTTP/1.1 204 No Content\\r\\nContent-Length: 0\\r\\n\\r\\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class Nginx:
    """A running nginx (and, for a slow host, its delay server); `stop()` ends both."""

    port: int
    prefix: Path
    process: subprocess.Popen[bytes]
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    status_host: str = "127.0.0.1"
    status_reads: int = 0

    @property
    def url(self) -> str:
        """The start URL of the single-host site."""
        return f"http://{self.status_host}:{self.port}/"

    def requests(self) -> int:
        """Requests answered so far, not counting these stub_status reads themselves."""
        status_url = f"http://{self.status_host}:{self.port}{STATUS_PATH}"
        with urllib.request.urlopen(status_url, timeout=5) as reply:
            text = reply.read().decode()
        self.status_reads += 1
        # "Active connections: 1 \nserver accepts handled requests\n 5 5 12 \n..."
        return int(text.splitlines()[2].split()[2]) - self.status_reads

    def log_lines(self) -> list[str]:
        """The access log so far: "msec request_time server_addr uri status" a line."""
        log = self.prefix / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), then kill after 10 s; delay servers too."""
        for process, sig in [(self.process, signal.SIGQUIT)] + [
            (h, signal.SIGTERM) for h in self.helpers
        ]:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def pinned(core: int, argv: list[str]) -> list[str]:
    """argv run on one core with taskset, where there are two or more cores."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *argv]
    return argv


def start(
    sites: dict[str, Path],
    port: int,
    slow_host: str | None = None,
    core: int = 0,
    access_log: bool = False,
) -> Nginx:
    """nginx serving `sites` (host -> folder) on host:port, ready when this returns.
    `access_log`: one unbuffered line a request, for `Nginx.log_lines()` (targets 2, 3)."""
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx")
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    helpers: list[subprocess.Popen[bytes]] = []
    servers = []
    for host, root in sites.items():
        extra = ""
        if host == slow_host:
            delay, delay_port = _start_delay_server()
            helpers.append(delay)
            extra = _SLOW.format(delay_port=delay_port)
        servers.append(
            _SERVER.format(host=host, port=port, root=root, status=STATUS_PATH, extra=extra)
        )
    conf = prefix / "nginx.conf"
    log = f"{prefix}/access.log timing" if access_log else "off"
    conf.write_text(_MAIN.format(prefix=prefix, servers="".join(servers), access_log=log))
    argv = ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    process = subprocess.Popen(pinned(core, argv), stdin=subprocess.DEVNULL)
    server = Nginx(port, prefix, process, helpers, status_host=next(iter(sites)))
    _wait_ready(server)
    return server


def _start_delay_server() -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-c", _DELAY_SERVER], stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def _wait_ready(server: Nginx) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            server.requests()
            return
        except OSError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                error = (server.prefix / "error.log").read_text(errors="replace")
                server.stop()
                raise SystemExit(f"nginx did not start:\n{error}") from None
            time.sleep(0.05)


def main() -> None:
    """Generate a site, serve it until Ctrl-C."""
    from gensite import base_url, write_fanout, write_hosts, write_single

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=["single", "hosts", "fanout"])
    parser.add_argument("--pages", type=int, default=20_000, help="pages (per host)")
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--slow", action="store_true", help="hosts: the last host is slow")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-site-"))
    if args.layout == "hosts":
        hosts = [f"127.0.0.{i}" for i in range(2, 2 + args.hosts)]
        write_hosts(work, hosts, args.pages, args.port)
        sites = {host: work / host for host in hosts}
    else:
        sites = {"127.0.0.1": work}
        if args.layout == "single":
            write_single(work, args.pages, base_url("127.0.0.1", args.port))
        else:
            write_fanout(work)
    server = start(sites, args.port, slow_host=[*sites][-1] if args.slow else None)
    print(f"serving {work} at {', '.join(sites)} port {args.port}; Ctrl-C stops", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
