"""Two builds of the crawler, paired: does a change keep the default path as fast?

Runs `crawler crawl` of the bench spider from two installs in turn (A B, B A, A B, ...)
on one generated single-host site served by nginx (pinned to core 0; each crawl to
core 1), each run checked as run.py checks it (exit 0, nginx answered N + 1 requests,
every page stored once with its exact title). A pair shares the machine's mood, so the
ratio pair by pair (after / before) is steadier than either figure; the medians of the
ratios are the figures to quote.

    python bench/paired.py --before /tmp/before/.venv/bin/crawler \
        --before-spider crawler.bench:BenchSpider --pages 20000 --pairs 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import gensite
import serve
from run import VENV_BIN, Tool, _jsonl_items, _tail, check, measure

SETTINGS = ["CONCURRENCY=64", "PER_HOST=64", "ROBOTS=false"]


def build(name: str, crawler: str, spider: str) -> Tool:
    """One install of the crawler as a contender."""

    def argv(url: str, folder: Path) -> list[str]:
        command = [crawler, "crawl", spider, "--db", str(folder / "crawl.db"), "-q"]
        command += ["-s", f"START_URL={url}"]
        return command + [arg for s in SETTINGS for arg in ("-s", s)]

    def items(folder: Path) -> list[dict[str, str]]:
        export = [crawler, "export", str(folder / "crawl.db")]
        return _jsonl_items(
            subprocess.run(export, capture_output=True, text=True, check=True).stdout
        )

    return Tool(name, argv, items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the `crawler` command of the old build")
    parser.add_argument("--before-spider", default="crawler.tools.bench:BenchSpider")
    parser.add_argument("--after", default=str(VENV_BIN / "crawler"))
    parser.add_argument("--after-spider", default="crawler.tools.bench:BenchSpider")
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--port", type=int, default=8182)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    before = build("before", args.before, args.before_spider)
    after = build("after", args.after, args.after_spider)
    with tempfile.TemporaryDirectory(prefix="crawler-paired-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx's worker (nobody) reads the site below it
        gensite.write_single(work / "site", args.pages, gensite.base_url("127.0.0.1", args.port))
        server = serve.start({"127.0.0.1": work / "site"}, args.port)
        figures: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        try:
            for pair in range(args.pairs):
                order = (before, after) if pair % 2 == 0 else (after, before)
                for tool in order:
                    folder = work / f"{tool.name}-{pair}"
                    folder.mkdir()
                    start = server.requests()
                    argv = serve.pinned(1, tool.argv(server.url, folder))
                    seconds, status, usage = measure(argv, folder, folder / "log.txt", args.timeout)
                    problem = check(tool, folder, status, server.requests() - start, args.pages)
                    if problem is not None:
                        print(_tail(folder / "log.txt"), file=sys.stderr)
                        sys.exit(f"{tool.name} run {pair + 1} does not count: {problem}")
                    cpu = usage.ru_utime + usage.ru_stime
                    figures[tool.name].append(((args.pages + 1) / seconds, cpu))
                b, a = figures["before"][-1], figures["after"][-1]
                print(
                    f"pair {pair + 1}: before {b[0]:6.0f} pages/s {b[1]:5.2f} CPU-s, "
                    f"after {a[0]:6.0f} pages/s {a[1]:5.2f} CPU-s: "
                    f"{a[0] / b[0]:.3f}x pages/s, {a[1] / b[1]:.3f}x CPU-s",
                    flush=True,
                )
        finally:
            server.stop()
    pairs = list(zip(figures["before"], figures["after"], strict=True))
    rate = statistics.median(a[0] / b[0] for b, a in pairs)
    cpu = statistics.median(a[1] / b[1] for b, a in pairs)
    print(
        f"medians of {len(pairs)} pairs: before {statistics.median(b[0] for b, _ in pairs):.0f}"
        f" pages/s {statistics.median(b[1] for b, _ in pairs):.2f} CPU-s; after"
        f" {statistics.median(a[0] for _, a in pairs):.0f} pages/s"
        f" {statistics.median(a[1] for _, a in pairs):.2f} CPU-s;"
        f" after/before {rate:.3f}x pages/s, {cpu:.3f}x CPU-s"
    )


if __name__ == "__main__":
    main()
