"""The bench spider with several start URLs, for target 2 (many hosts): `crawler crawl
bench/hosts_spider.py`, start URLs in the environment variable BENCH_START_URLS
(space-separated), as START_URL takes one URL only."""

from __future__ import annotations

import os

from crawler.tools.bench import BenchSpider


class HostsSpider(BenchSpider):
    """Stores every page's URL and title; follows every link; starts on every host."""

    name = "bench-hosts"
    start_urls = os.environ.get("BENCH_START_URLS", "").split()
