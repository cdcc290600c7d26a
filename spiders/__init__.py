"""The Spider base, re-exported beside the bundled example spiders."""

from crawler.spider import Spider

__all__ = ["Spider"]
