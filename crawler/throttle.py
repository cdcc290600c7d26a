"""AUTOTHROTTLE: each host's delay follows its latency and its 429/503s.

Scrapy's AutoThrottle, per host of the frontier. After each try's answer (the fetcher
reports its latency, request sent to body read, and its status), the host's delay moves
toward latency / AUTOTHROTTLE_TARGET_CONCURRENCY: about that many requests in flight to
it on average. A rise is taken at once, a fall by averaging with the delay before (speed
up slowly); a 429 or 503 at least doubles it at once (slow down fast). Never below the
host's floor (DELAY, or its robots.txt Crawl-delay if larger), never above
AUTOTHROTTLE_MAX_DELAY. An answer other than 200 never lowers it: error pages are small
and fast, and say little of how loaded the host is.
"""

from __future__ import annotations

TROUBLE = frozenset({429, 503})
TROUBLE_MIN = 0.25  # seconds: the least delay after a 429/503 (doubling 0 is still 0)


class AutoThrottle:
    """Computes a host's next delay from its last answer."""

    __slots__ = ("_max", "_target")

    def __init__(self, target_concurrency: float, max_delay: float) -> None:
        self._target = target_concurrency
        self._max = max_delay

    def delay(self, delay: float, floor: float, latency: float, status: int) -> float:
        """The delay after an answer with `status` that took `latency` seconds, for a host
        whose delay was `delay` and may not go below `floor`."""
        aim = latency / self._target
        if status in TROUBLE:
            new = max(2 * delay, aim, TROUBLE_MIN)
        else:
            new = max(aim, (delay + aim) / 2)
            if status != 200 and new < delay:
                return delay
        return min(max(new, floor), max(self._max, floor))
