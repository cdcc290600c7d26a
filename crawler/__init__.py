"""An asyncio crawl framework: Spider subclasses in, items in SQLite out."""

from crawler.errors import DropItem, FormNotFound, IgnoreRequest
from crawler.forms import FormRequest
from crawler.http import Request, Response
from crawler.spider import Spider

__all__ = [
    "DropItem",
    "FormNotFound",
    "FormRequest",
    "IgnoreRequest",
    "Request",
    "Response",
    "Spider",
    "__version__",
]
__version__ = "0.1.0"
