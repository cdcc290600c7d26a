"""argv -> frozen Settings -> engine. The only module that prints or exits.

Every user error is a UsageError: one line on stderr, exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import resource
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO

from crawler import __version__
from crawler.assemble import settings_for, sqlite_engine
from crawler.errors import UsageError
from crawler.loader import bundled_spiders, load_spider
from crawler.progress import LOG_FORMAT, Progress
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.stats import Snapshot
from crawler.storage.export import write_csv, write_jsonl
from crawler.storage.sqlite import Summary, iter_items, open_readonly, read_summary
from crawler.tools.cache import clear_cache
from crawler.tools.devtools import fetch_page, new_spider, parse_pages

log = logging.getLogger("crawler")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("crawler").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    """The command line: crawl, list, export, status, bench, and the spider author's tools."""
    common = _Parser(add_help=False)
    common.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser = _Parser(prog="crawler", description="An asyncio crawl framework.", parents=[common])
    parser.add_argument("--version", action="version", version=f"crawler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    crawl = command("crawl", "run (or resume) a spider")
    crawl.add_argument("target", help="a spider's name, a module, or a path to a .py file")
    crawl.add_argument("--db", type=Path, help="the crawl database (default: <name>.db)")
    crawl.add_argument("--cache", metavar="PATH", help="an HTTP cache file (the CACHE setting)")
    crawl.add_argument(
        "--refresh", metavar="AGE", type=parse_age,
        help="re-crawl the pages done longer ago than AGE (30m, 12h, 7d, 2w, or seconds)",
    )  # fmt: skip
    crawl.add_argument(
        "--workers", type=int, default=0, metavar="K",
        help="K worker processes beside this one (needs -s FRONTIER=redis://HOST:PORT/N)",
    )  # fmt: skip
    _settings_option(crawl)

    work = command("work", "join a crawl kept in Redis as one more worker")
    work.add_argument("target", help="a spider's name, a module, or a path to a .py file")
    _settings_option(work)

    command("list", "the spiders it can find")

    export = command("export", "print or write the stored items")
    export.add_argument("db", type=Path)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("-o", "--output", type=Path, help="a file (default: stdout)")

    status = command("status", "pages done, queued and failed; errors by kind")
    status.add_argument("db", type=Path)

    serve = command("serve", "a web dashboard of a live or finished crawl database")
    serve.add_argument("db", type=Path)
    serve.add_argument("--port", type=int, default=8080, help="default 8080 (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")

    bench = command("bench", "crawl a generated site on 127.0.0.1")
    bench.add_argument("--pages", type=int, default=5000, help="pages in the site (default 5000)")
    _settings_option(bench)

    fetch = command("fetch", "fetch a page as a crawl would and print its body")
    fetch.add_argument("url")
    fetch.add_argument("--headers", action="store_true", help="print status and headers instead")
    fetch.add_argument("--spider", help="use this spider's settings")
    _settings_option(fetch)

    parse = command("parse", "run a spider's callback on a page; print its items and requests")
    parse.add_argument("url")
    parse.add_argument("--spider", required=True, help="a spider's name, module or .py file")
    parse.add_argument("--callback", help="the spider method (default: parse)")
    parse.add_argument("--depth", type=int, default=1, help="levels of pages (default 1)")
    parse.add_argument("--db", type=Path, help="also store it all in this crawl database")
    _settings_option(parse)

    shell = command("shell", "an interactive prompt with response, fetch() and view()")
    shell.add_argument("url", nargs="?")
    shell.add_argument("--spider", help="a spider's name, module or .py file")
    _settings_option(shell)

    check = command("check", "run the checks a spider declares for its callbacks")
    check.add_argument(
        "spider", metavar="target", help="a spider's name, a module, or a path to a .py file"
    )
    check.add_argument("--files", type=Path, help="the folder of the saved pages checks name")
    _settings_option(check)

    new = command("new", "write a spider file from a template")
    new.add_argument("name")
    new.add_argument("url", nargs="?")

    cache = command("cache", "manage an HTTP cache file")
    cache.add_argument("action", choices=["clear"])
    cache.add_argument("path", type=Path)
    return parser


def _settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", dest="settings", action="append", default=[], metavar="KEY=VALUE",
        help="a setting for this run (repeatable)",
    )  # fmt: skip


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """-s KEY=VALUE pairs as a dict; a pair without '=' is a UsageError."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-s {pair!r}: expected KEY=VALUE")
        settings[key.strip().upper()] = value
    return settings


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """--refresh's AGE in seconds: a number, or one with a unit (30m, 12h, 7d, 2w)."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"--refresh {text!r}: expected an age such as 30m, 12h, 7d, 2w, or seconds"
        )
    return float(match[1]) * _AGE_UNITS[match[2].lower()]


def main(argv: Sequence[str] | None = None) -> int:
    """The `crawler` console command."""
    try:
        args = build_parser().parse_args(argv)
        _setup_logging("ERROR" if args.quiet else args.log_level)
        code: int = _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"crawler: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("crawler: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`): nothing more to say
        code = 0
    sys.exit(code)


def _setup_logging(level: str) -> None:
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise UsageError(f"--log-level {level!r}: expected DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=value, format=LOG_FORMAT)
    logging.getLogger("aiohttp_retry").setLevel(max(value, logging.INFO))


def _crawl(args: argparse.Namespace) -> int:
    spider = load_spider(args.target)
    db = args.db or Path(f"{spider.name}.db")
    overrides = parse_settings(args.settings)
    if args.cache:
        overrides["CACHE"] = args.cache
    if args.workers < 0:
        raise UsageError(f"crawl: --workers {args.workers}: expected 0 or more")
    runner: Runner
    if settings_for(spider, overrides).frontier.startswith("redis://"):
        if args.refresh is not None:
            raise UsageError("crawl: --refresh is not available with FRONTIER=redis yet")
        from crawler.forked import fork
        from crawler.rediscrawl import RedisCrawl

        # Forked now, before any event loop or thread: they wait until the crawl is begun.
        given = parse_settings(args.settings)  # as `crawler work -s ...` would get them
        workers = fork(args.workers, lambda: _forked_worker(spider, given))
        runner = RedisCrawl(spider, db, overrides, workers=workers)
    elif args.workers > 1:
        raise UsageError(
            f"crawl: --workers {args.workers} needs a crawl kept in Redis"
            " (-s FRONTIER=redis://HOST:PORT/N): a SQLite crawl runs in one process"
        )
    else:
        runner = sqlite_engine(spider, db, overrides, refresh=args.refresh)
    return _run(runner, args, db)


def _work(args: argparse.Namespace) -> int:
    from crawler.rediscrawl import RedisWorker

    spider = load_spider(args.target)
    return _run(RedisWorker(spider, parse_settings(args.settings)), args, None)


def _forked_worker(spider: Spider, overrides: dict[str, Any]) -> int:
    """A worker process of `crawl --workers K`: `crawler work -q` on the crawl's spider."""
    from crawler.rediscrawl import RedisWorker

    logging.getLogger().setLevel(logging.ERROR)
    try:
        return _run(RedisWorker(spider, overrides), argparse.Namespace(quiet=True), None)
    except UsageError as exc:
        print(f"crawler: {exc}", file=sys.stderr)
        return 2


def _run(runner: Runner, args: argparse.Namespace, db: Path | None) -> int:
    progress = None
    if not args.quiet:
        live = sys.stderr.isatty()
        progress = Progress(
            runner.snapshot, sys.stderr, live=live, every=runner.settings.progress_every
        )
    summary, interrupted = asyncio.run(_run_interruptible(runner, progress))
    if not args.quiet:
        if db is not None:
            _print_summary(summary, db, sys.stdout)
        else:
            print(
                f"this worker: {summary.pages_this_run} pages in {summary.elapsed:.1f} s,"
                f" {summary.items} items"
            )
    return 130 if interrupted else 0


class Runner(Protocol):
    """A crawl the command line runs: a single-process engine, or a Redis crawl's part."""

    settings: Settings

    async def run(self) -> Summary: ...

    def stop(self) -> None: ...

    def snapshot(self) -> Snapshot: ...


async def _run_interruptible(engine: Runner, progress: Progress | None) -> tuple[Summary, bool]:
    """Run the engine (and its progress display); Ctrl-C once stops it cleanly, twice
    cancels it."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            engine.stop()
        elif main_task is not None:
            log.warning("second Ctrl-C: exiting now; pages in flight will be refetched on resume")
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    root = logging.getLogger()
    handlers = root.handlers[:]
    display = None
    if progress is not None:
        root.handlers = [progress.handler()]  # log lines and the display never interleave
        logging.getLogger("crawler.progress").setLevel(logging.INFO)
        display = asyncio.create_task(progress.run(), name="progress")
    try:
        summary = await engine.run()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        if display is not None:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display
        root.handlers = handlers
    return summary, presses > 0


def _list(args: argparse.Namespace) -> int:
    for name, cls in sorted(bundled_spiders().items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:12} {doc[0] if doc else cls.__name__}")
    return 0


def _export(args: argparse.Namespace) -> int:
    with closing(open_readonly(args.db)) as db:
        if args.output is None:
            _write_items(args.format, db, sys.stdout)
            return 0
        try:
            out = args.output.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write ({exc.strerror})") from None
        with out:
            count = _write_items(args.format, db, out)
    print(f"{count} items written to {args.output}", file=sys.stderr)
    return 0


def _write_items(form: str, db: sqlite3.Connection, out: TextIO) -> int:
    if form == "csv":
        return write_csv(lambda: iter_items(db), out)
    return write_jsonl(iter_items(db), out)


def _status(args: argparse.Namespace) -> int:
    with closing(open_readonly(args.db)) as db:
        summary = read_summary(db)
        facts = dict(db.execute("SELECT key, value FROM crawl").fetchall())
    live = _live_redis(facts)
    state = None
    if live is not None:  # a crawl kept in Redis, running: its queue is there
        summary.pages_queued = int(facts.get("redis_queued") or 0) + int(facts["in_flight"])
        state = "running"
    elif "redis_crawl" in facts:  # its queue is in Redis; an end by MAX_PAGES leaves some
        summary.pages_queued = int(facts.get("redis_queued") or 0)
        if facts.get("run_state") != "ended" or summary.pages_queued:
            state = "unfinished (run the same crawl to resume; its queue is in Redis)"
    _print_summary(summary, args.db, sys.stdout, state)
    if "redis_crawl" in facts:
        print(
            f"leases expired: {facts.get('redis_expired', 0)},"
            f" late finishes refused: {facts.get('redis_refused', 0)}"
        )
    if live is not None:
        print(f"workers: {len(live)} live")
        for worker in live:
            print(
                f"  {worker.get('host')} pid {worker.get('pid')}: {worker.get('pages', 0)} pages,"
                f" {worker.get('leases', 0)} leases held, last heartbeat"
                f" {float(worker.get('age', 0)):.1f} s ago"
            )
    return 0


LIVE_STALE = 10.0  # seconds: a collector's live state older than this is not live


def _live_redis(facts: dict[str, str]) -> list[dict[str, Any]] | None:
    """The live workers of a running crawl kept in Redis, as its collector last wrote
    them; None if this is not one."""
    import json
    import time

    if "redis_crawl" not in facts or facts.get("run_state") not in ("running", "stopping"):
        return None
    if time.time() - float(facts.get("heartbeat") or 0) > LIVE_STALE:
        return None
    workers: list[dict[str, Any]] = json.loads(facts.get("redis_workers") or "[]")
    return workers


def _print_summary(summary: Summary, db: Path, out: TextIO, state: str | None = None) -> None:
    lines = [
        f"spider: {summary.spider}",
        f"database: {db}",
        f"state: {state or _state(summary)}",
        f"done: {summary.pages_done}",
        f"queued: {summary.pages_queued}",
        f"failed: {summary.pages_failed}",
        f"skipped: {summary.pages_skipped}",
        f"redirected: {summary.pages_redirected}",
        f"not modified: {summary.not_modified}",
        f"items: {summary.items}",
        "items dropped: " + (_counts(summary.items_dropped) or "none"),
        f"retries: {summary.retries}",
        f"bytes: {summary.bytes}",
        "errors by kind: " + (_counts(summary.errors) or "none"),
        "status codes: " + (_counts(summary.status_codes) or "none"),
        "links not queued: " + (_counts(summary.dropped) or "none"),
    ]
    if summary.elapsed:
        rate = summary.pages_this_run / summary.elapsed
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines.append(
            f"this run: {summary.pages_this_run} pages in {summary.elapsed:.1f} s"
            f" ({rate:.0f}/s), peak memory {peak:.0f} MB"
        )
    out.write("\n".join(lines) + "\n")


def _state(summary: Summary) -> str:
    return "finished" if summary.finished else "unfinished (run the same crawl to resume)"


def _counts(counts: dict[Any, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items())


def _serve(args: argparse.Namespace) -> int:
    from crawler.dashboard.app import serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"serve: --port {args.port}: expected 0 to 65535")

    def ready(url: str) -> None:
        print(f"dashboard of {args.db} at {url} (Ctrl-C to stop)", flush=True)

    try:
        asyncio.run(serve(args.db, args.host, args.port, ready))
    except KeyboardInterrupt:
        return 0
    return 0


def _bench(args: argparse.Namespace) -> int:
    from crawler.tools.bench import run_bench

    return run_bench(args.pages, parse_settings(args.settings), sys.stdout)


def _settings_for(args: argparse.Namespace) -> tuple[Spider | None, Settings]:
    spider = load_spider(args.spider) if getattr(args, "spider", None) else None
    custom = spider.custom_settings if spider is not None else {}
    return spider, Settings.build(custom, parse_settings(args.settings))


def _fetch(args: argparse.Namespace) -> int:
    _, settings = _settings_for(args)
    return asyncio.run(fetch_page(args.url, settings, sys.stdout.buffer, headers=args.headers))


def _parse(args: argparse.Namespace) -> int:
    spider, settings = _settings_for(args)
    assert spider is not None  # --spider is required
    run = parse_pages(
        args.url, spider, settings, sys.stdout, callback=args.callback, depth=args.depth, db=args.db
    )
    return asyncio.run(run)


def _shell(args: argparse.Namespace) -> int:
    from crawler.tools.shell import run_shell

    spider, settings = _settings_for(args)
    return run_shell(args.url, settings, spider)


def _check(args: argparse.Namespace) -> int:
    from crawler.tools.checks import run_checks

    spider, settings = _settings_for(args)
    assert spider is not None  # the target is required
    return run_checks(spider, settings, sys.stdout, files=args.files)


def _new(args: argparse.Namespace) -> int:
    path = new_spider(args.name, args.url, Path.cwd())
    print(f"wrote {path}; run it with: crawler crawl {path.name}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    removed = clear_cache(args.path)
    if not args.quiet:
        print(f"{removed} responses removed from {args.path}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "crawl": _crawl,
    "work": _work,
    "list": _list,
    "export": _export,
    "status": _status,
    "fetch": _fetch,
    "parse": _parse,
    "shell": _shell,
    "check": _check,
    "new": _new,
    "cache": _cache,
    "bench": _bench,
    "serve": _serve,
}

if __name__ == "__main__":
    main()
