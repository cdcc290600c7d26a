"""Writes the benchmark sites to a folder, for nginx to serve as static files.

Every page is byte-identical to what `crawler.tools.benchsite` renders, so a crawl of the
nginx copy can be checked with `expected_titles()`. Three layouts, one per target of
issue 6:

- `single`: one host, N pages: `index.html` and `p/{n}.html`.
- `hosts`: one such site per host (127.0.0.2, .3, ...), each in a folder named after its
  host, its full-URL links pointing at its own host, so links never leave their host.
- `fanout`: `index.html` links to `f/0.html`; `f/0.html` links to `f/1.html` ..
  `f/{F-1}.html`; every `f/{n}.html` also links to L unique leaves `u/{n}/{k}.html`,
  which nginx answers with one small page (`leaf.html`): F x L URLs to queue.

    python bench/gensite.py single --pages 20000 --port 8181 --out /tmp/site
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from crawler.tools.benchsite import index_html, page_html, page_path

FANOUT_PAGES = 1_000
FANOUT_LINKS = 1_000


def base_url(host: str, port: int) -> str:
    """The origin a site's full-URL links start with."""
    return f"http://{host}:{port}"


def write_single(root: Path, pages: int, base: str, seed: int = 0) -> None:
    """`root/index.html` and `root/p/{n}.html` for n < pages."""
    (root / "p").mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_bytes(index_html(pages, seed=seed))
    for n in range(pages):
        (root / page_path(n).lstrip("/")).write_bytes(page_html(n, pages, seed=seed, base=base))
    _open_up(root)


def write_hosts(root: Path, hosts: Iterable[str], pages: int, port: int) -> None:
    """One `single` site of `pages` pages per host, in `root/{host}/`."""
    for host in hosts:
        write_single(root / host, pages, base_url(host, port))
    _open_up(root)


def write_fanout(root: Path, fanout: int = FANOUT_PAGES, links: int = FANOUT_LINKS) -> None:
    """The frontier-memory site: `fanout` pages of `links` unique leaf links each."""
    (root / "f").mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_bytes(_html("Fanout site", ['<a href="/f/0.html">start</a>']))
    (root / "leaf.html").write_bytes(_html("Leaf", ["<p>A leaf: no links.</p>"]))
    for n in range(fanout):
        (root / "f" / f"{n}.html").write_bytes(_fanout_page(n, fanout, links))
    _open_up(root)


def _fanout_page(n: int, fanout: int, links: int) -> bytes:
    """Leaves first, then (on page 0) the other fanout pages: a LIFO crawler that pops the
    last link first still reaches every fanout page before most leaves."""
    body = [f'<a href="/u/{n}/{k}.html">leaf {k}</a>' for k in range(links)]
    if n == 0:
        body += [f'<a href="/f/{m}.html">fanout {m}</a>' for m in range(1, fanout)]
    return _html(f"Fanout {n}", body)


def _html(title: str, body: list[str]) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    ).encode()


def _open_up(root: Path) -> None:
    """nginx's workers run as `nobody`: the site's own folders must be readable by all
    (a `tempfile.mkdtemp` folder is 0700); the folders above it are the caller's."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.chmod(folder, 0o755)


def main() -> None:
    """Command line: `single`, `hosts` or `fanout`, and the output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=["single", "hosts", "fanout"])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--pages", type=int, default=20_000, help="pages (per host)")
    parser.add_argument("--port", type=int, default=8181, help="the port nginx will listen on")
    parser.add_argument("--hosts", type=int, default=10, help="hosts, from 127.0.0.2 on")
    args = parser.parse_args()
    if args.layout == "single":
        write_single(args.out, args.pages, base_url("127.0.0.1", args.port))
    elif args.layout == "hosts":
        hosts = [f"127.0.0.{i}" for i in range(2, 2 + args.hosts)]
        write_hosts(args.out, hosts, args.pages, args.port)
    else:
        write_fanout(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
