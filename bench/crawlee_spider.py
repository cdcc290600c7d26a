"""The bench spider for Crawlee for Python, with its defaults (file-system storage under
the working folder, its HTTP client, its autoscaled pool) but 64 concurrent tasks, robots
off (its default) and every link on the same host enqueued.

Runs in Crawlee's own virtualenv (not the project's); items land in
`storage/datasets/default/*.json` under the working folder:

    python bench/crawlee_spider.py http://127.0.0.1:8181/
"""

from __future__ import annotations

import asyncio
import sys

from crawlee import ConcurrencySettings
from crawlee.crawlers import ParselCrawler, ParselCrawlingContext


async def crawl(start_url: str) -> None:
    """Crawl from `start_url`: one item per page, every same-host link followed."""
    concurrency = ConcurrencySettings(
        min_concurrency=64, desired_concurrency=64, max_concurrency=64
    )
    crawler = ParselCrawler(concurrency_settings=concurrency, respect_robots_txt_file=False)

    @crawler.router.default_handler
    async def parse(context: ParselCrawlingContext) -> None:
        title = context.selector.css("title::text").get()
        await context.push_data({"url": context.request.url, "title": title})
        await context.enqueue_links(strategy="same-hostname")

    await crawler.run([start_url])


if __name__ == "__main__":
    asyncio.run(crawl(sys.argv[1]))
