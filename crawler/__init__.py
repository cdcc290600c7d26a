"""An asyncio crawl framework: Spider subclasses in, items in SQLite out."""

from crawler.errors import DropItem, IgnoreRequest
from crawler.http import Request, Response
from crawler.spider import Spider

__all__ = ["DropItem", "IgnoreRequest", "Request", "Response", "Spider", "__version__"]
__version__ = "0.1.0"
