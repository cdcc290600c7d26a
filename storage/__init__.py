"""SQLite persistence (the crawl's one database) and the item exporters."""
