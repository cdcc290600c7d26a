"""`crawler serve`: a read-only web dashboard of a live or finished crawl database.

queries.py reads the database (SQL only there), render.py turns what it reads into HTML
(server-side SVG for the chart), app.py is the aiohttp.web application: routes, query
parameter checks, the JSON API under /api/.
"""
