"""An asyncio crawl framework: Spider subclasses in, items in SQLite out."""

from crawler.errors import DropItem, FormNotFound, IgnoreRequest
from crawler.forms import FormRequest
from crawler.http import Request, Response
from crawler.rules import CrawlSpider, Rule
from crawler.sitemap import SitemapSpider
from crawler.spider import Spider

__all__ = [
    "CrawlSpider",
    "DropItem",
    "FormNotFound",
    "FormRequest",
    "IgnoreRequest",
    "Request",
    "Response",
    "Rule",
    "SitemapSpider",
    "Spider",
    "__version__",
]
__version__ = "0.1.0"
