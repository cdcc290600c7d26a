"""scrapy-redis's Redis memory for the URLs of bench/redis_memory.py, beside ours.

Run by redis_memory.py with the python of a virtualenv holding scrapy-redis (it needs
Scrapy, which the project's own virtualenv does not have), against the redis-server that
script started. The fingerprints and the queued requests are made by scrapy-redis's own
`RFPDupeFilter.request_fingerprint` and `PriorityQueue._encode_request` (pickled
`Request.to_dict`), and written with the commands those classes send (SADD to the
dupefilter's SET, ZADD to the queue's ZSET, score -priority), pipelined. Prints JSON:
bytes per seen URL and per pending request.

    /tmp/scrapy-redis-venv/bin/python bench/scrapy_redis_memory.py --port P --urls N --hosts H
"""

from __future__ import annotations

import argparse
import json

import redis
import scrapy
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.queue import PriorityQueue


class Shop(scrapy.Spider):
    """The spider the requests belong to."""

    name = "shop"

    def parse_item(self, response: object) -> None:
        """The callback the typical request names."""


def used(server: redis.Redis) -> int:
    """used_memory, bytes."""
    return int(server.info("memory")["used_memory"])


def push(pipe: redis.client.Pipeline, key: str, encoded: list[tuple[int, bytes]]) -> None:
    """The fingerprints added so far, then the requests, as PriorityQueue.push does."""
    pipe.execute()
    for score, data in encoded:
        pipe.execute_command("ZADD", key, score, data)
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--urls", type=int, required=True)
    parser.add_argument("--hosts", type=int, required=True)
    args = parser.parse_args()
    server = redis.Redis(host="127.0.0.1", port=args.port)
    server.flushall()
    spider = Shop()
    dupefilter = RFPDupeFilter(server, "shop:dupefilter")
    queue = PriorityQueue(server, spider, "%(spider)s:requests")
    base = used(server)
    pipe = server.pipeline(transaction=False)
    encoded = []
    for i in range(args.urls):  # the URLs of redis_memory.requests()
        host = f"www.shop-{i % args.hosts:04d}.example.com"
        url = f"http://{host}/catalogue/category/books/item-{i:07d}/index.html"
        request = scrapy.Request(url, callback=spider.parse_item, priority=0, meta={"depth": 3})
        pipe.sadd(dupefilter.key, dupefilter.request_fingerprint(request))
        encoded.append((-request.priority, queue._encode_request(request)))
        if len(encoded) == 10_000:
            push(pipe, queue.key, encoded)
            encoded = []
    push(pipe, queue.key, encoded)
    both = used(server)
    server.delete(queue.key)
    seen = used(server)
    print(json.dumps({
        "seen": (seen - base) / args.urls,
        "pending": (both - seen) / args.urls,
        "request_bytes": len(queue._encode_request(request)),
        "scrapy_redis": __import__("scrapy_redis").__version__,
        "scrapy": scrapy.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
