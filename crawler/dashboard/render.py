"""HTML for each view, from what queries.py read: a layout template, tables, and the rate
chart as an SVG drawn here (no chart library, nothing to vendor, and it shows without
JavaScript). Every value from the database is escaped on its way in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from html import escape
from importlib.resources import files
from string import Template
from typing import Any
from urllib.parse import urlencode

from rich.filesize import decimal

from crawler.progress import clock

VIEWS = (("/", "Crawl"), ("/hosts", "Hosts"), ("/errors", "Errors"), ("/items", "Items"))
CHART_W, CHART_H, PAD = 760, 220, 40


@cache
def _layout() -> Template:
    return Template(files("crawler.dashboard").joinpath("templates/layout.html").read_text())


def layout(title: str, spider: str, here: str, body: str, *, live: bool) -> str:
    """A whole page: header, navigation, the view's HTML."""
    nav = "".join(
        f'<a href="{path}"{" class=here" if path == here else ""}>{name}</a>'
        for path, name in VIEWS
    )
    return _layout().substitute(
        title=escape(title), spider=escape(spider), nav=nav, main=body,
        live="1" if live else "0", live_note="live: refreshing every 2 s" if live else "",
    )  # fmt: skip


def number(value: Any) -> str:
    """An int with thousands separators; '-' for None."""
    return "-" if value is None else f"{value:,}"


def seconds(value: float | None) -> str:
    """A duration: milliseconds below 10 s, else H:MM:SS."""
    if value is None:
        return "-"
    return f"{value * 1000:,.0f} ms" if value < 10 else clock(value)


def when(epoch: float | None) -> str:
    """An epoch time as UTC."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def link(path: str, text: str, **query: Any) -> str:
    """An <a> to one of our views, with a query string of the non-empty parameters."""
    params = {k: v for k, v in query.items() if v not in (None, "")}
    href = path + ("?" + urlencode(params) if params else "")
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: frozenset[int] = frozenset(),
    table_id: str = "",
) -> str:
    """A table of cells already rendered to HTML; columns in `numeric` right-aligned."""

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def overview(facts: dict[str, Any], points: list[dict[str, Any]]) -> str:
    """The crawl's facts and its rate chart."""
    state = facts["state"]
    cells = [
        ("state", f'<span class="state-{state}">{state}</span>'),
        ("started", when(facts["started"] or facts["created"])),
        ("elapsed", clock(facts["elapsed"]) if facts["elapsed"] is not None else "-"),
        ("done", number(facts["done"])),
        ("queued", number(facts["queued"])),
        ("in flight", number(facts["in_flight"])),
        ("failed", number(facts["failed"])),
        ("skipped", number(facts["skipped"])),
        ("items", number(facts["items"])),
        ("bytes", f'<span title="{facts["bytes"]:,}">{decimal(facts["bytes"])}</span>'),
        ("retries", number(facts["retries"])),
        ("pages/s", f"{facts['rate']:,.1f}" if facts["rate"] is not None else "-"),
        ("ETA", clock(facts["eta"]) if facts["eta"] is not None else "-"),
    ]
    dl = "".join(
        f'<div><dt>{name}</dt><dd id="fact-{name.replace(" ", "-").replace("/", "-")}">'
        f"{value}</dd></div>"
        for name, value in cells
    )
    return f'<dl class="facts">{dl}</dl><h2>Rate over time</h2>{chart(points)}'


def chart(points: list[dict[str, Any]]) -> str:
    """Pages/s (blue line, left scale) and failed pages a minute (red bars, right scale)."""
    if not points:
        return "<p>No pages recorded per minute yet.</p>"
    width, height = CHART_W - 2 * PAD, CHART_H - 2 * PAD
    top_rate = max(p["pages_per_s"] for p in points) or 1.0
    top_errors = max(p["errors_per_min"] for p in points) or 1.0
    step = width / max(len(points) - 1, 1)
    bar = max(min(step * 0.6, 12.0), 1.0)

    def x(i: int) -> float:
        return PAD + (i * step if len(points) > 1 else width / 2)

    def y(value: float, top: float) -> float:
        return PAD + height - value / top * height

    bars = "".join(
        f'<rect x="{x(i) - bar / 2:.1f}" y="{y(p["errors_per_min"], top_errors):.1f}"'
        f' width="{bar:.1f}" height="{p["errors_per_min"] / top_errors * height:.1f}"'
        f' fill="#cf222e" opacity="0.5"/>'
        for i, p in enumerate(points)
        if p["errors_per_min"]
    )
    line = " ".join(f"{x(i):.1f},{y(p['pages_per_s'], top_rate):.1f}" for i, p in enumerate(points))
    dots = ""
    if len(points) == 1:  # no line through one point: a dot
        y0 = y(points[0]["pages_per_s"], top_rate)
        dots = f'<circle cx="{x(0):.1f}" cy="{y0:.1f}" r="3" fill="#0969da"/>'
    first = datetime.fromtimestamp(points[0]["minute"] * 60, UTC).strftime("%H:%M")
    last = datetime.fromtimestamp(points[-1]["minute"] * 60, UTC).strftime("%H:%M UTC")
    bottom = PAD + height
    return (
        f'<svg class="chart" id="rate-chart" viewBox="0 0 {CHART_W} {CHART_H}"'
        f' width="{CHART_W}" height="{CHART_H}" role="img"'
        ' aria-label="pages per second and errors per minute, per minute">'
        f'<line x1="{PAD}" y1="{bottom}" x2="{PAD + width}" y2="{bottom}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{bottom}" stroke="#999"/>'
        f"{bars}"
        f'<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="2"/>{dots}'
        f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{top_rate:,.1f}</text>'
        f'<text x="{PAD - 4}" y="{bottom}" text-anchor="end">0</text>'
        f'<text x="{PAD + width + 4}" y="{PAD + 4}">{top_errors:,.0f}</text>'
        f'<text x="{PAD}" y="{bottom + 16}">{first}</text>'
        f'<text x="{PAD + width}" y="{bottom + 16}" text-anchor="end">{last}</text>'
        f'<text x="{PAD}" y="{PAD - 12}" fill="#0969da">pages/s</text>'
        f'<text x="{PAD + width}" y="{PAD - 12}" text-anchor="end" fill="#cf222e">'
        "failed pages/min</text></svg>"
    )


HOST_COLUMNS = (
    ("host", "host"), ("done", "done"), ("waiting", "waiting"), ("in_flight", "in flight"),
    ("failed", "failed"), ("skipped", "skipped"), ("p50", "median time"),
    ("p95", "95th pct time"), ("bytes", "bytes"), ("state", "state"),
)  # fmt: skip


def hosts(rows: list[dict[str, Any]], sort: str, desc: bool) -> str:
    """The hosts table, each column header a link that sorts by it."""
    headers = []
    for key, name in HOST_COLUMNS:
        if key == "state":
            headers.append(name)
            continue
        first = "asc" if key == "host" else "desc"  # names A-Z, counts most first
        order = ("asc" if desc else "desc") if key == sort else first
        arrow = (" ▼" if desc else " ▲") if key == sort else ""
        headers.append(link("/hosts", name + arrow, sort=key, order=order))
    body = [
        [
            escape(r["host"]), number(r["done"]), number(r["waiting"]), number(r["in_flight"]),
            number(r["failed"]), number(r["skipped"]), seconds(r["p50"]), seconds(r["p95"]),
            decimal(r["bytes"]), escape(r["state"]),
        ]
        for r in rows
    ]  # fmt: skip
    note = (
        "<p>Response times are the fetch's duration (retries included), read from a"
        " histogram of ~9%-wide buckets. Waiting and in flight are the frontier's, while"
        " the crawl runs.</p>"
    )
    if not rows:
        return "<p>No per-host counts in this database yet.</p>"
    return note + table(headers, body, frozenset(range(1, 9)), "hosts")


def error_kinds(kinds: list[dict[str, Any]]) -> str:
    """Each kind of error with its count, linked to its pages."""
    if not kinds:
        return "<p>No errors.</p>"
    rows = [[link("/errors", k["kind"], kind=k["kind"]), number(k["count"])] for k in kinds]
    return table(["kind", "pages"], rows, frozenset({1}), "errors")


def error_pages(kind: str, pages: list[dict[str, Any]], next_after: int | None) -> str:
    """The pages one kind of error hit: each links to its page and to the page that found it."""
    rows = [
        [
            '<span class="url">' + link(f"/page/{p['id']}", p["url"]) + "</span>", p["state"],
            number(p["status"]), number(p["attempts"]), escape(p["error_text"] or ""),
            link(f"/page/{p['parent']}", p["parent_url"] or str(p["parent"]))
            if p["parent"] is not None else "(start request)",
        ]
        for p in pages
    ]  # fmt: skip
    heading = f"<p>{link('/errors', '← all errors')}</p>"
    body = table(
        ["URL", "state", "status", "attempts", "last error", "found on"], rows,
        frozenset({2, 3}), "error-pages",
    )  # fmt: skip
    return heading + body + pager("/errors", next_after, kind=kind)


def pager(path: str, next_after: int | None, **query: Any) -> str:
    """A link to the next page of rows, if there is one."""
    first = link(path, "first", **query)
    following = link(path, "next →", after=next_after, **query) if next_after is not None else ""
    return f'<p class="pager">{first} {following}</p>'


def items(found: list[dict[str, Any]], contains: str, next_after: int | None, total: int) -> str:
    """The filter form, the download buttons, and the items as a table of their fields."""
    columns: dict[str, None] = {}
    for row in found:
        columns.update(dict.fromkeys(row["item"]))
    rows = [
        [link(f"/page/{row['page']}", str(row["id"]))]
        + [escape(_cell(row["item"].get(column))) for column in columns]
        for row in found
    ]
    form = (
        '<form method="get" action="/items"><label>items containing '
        f'<input name="q" value="{escape(contains)}" maxlength="200"></label>'
        ' <button type="submit">filter</button></form>'
    )
    downloads = (
        '<p><a class="button" id="download-csv" href="/items.csv" download>download CSV</a>'
        '<a class="button" id="download-jsonl" href="/items.jsonl" download>download JSONL</a>'
        f" all {number(total)} items, as <code>crawler export</code> writes them</p>"
    )
    headers = ["item"] + [escape(c) for c in columns]
    if found:
        shown = table(headers, rows, table_id="items")
    elif next_after is not None:
        shown = f"<p>None of the items up to #{next_after:,} match; next → looks further.</p>"
    else:
        shown = "<p>No items match.</p>"
    return form + downloads + shown + pager("/items", next_after, q=contains)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def page(found: dict[str, Any]) -> str:
    """One request and its page."""
    parent = found["parent"]
    facts = [
        ("URL", f'<span class="url">{escape(found["url"])}</span>'),
        ("final URL", escape(found["final_url"] or "")),
        ("method", escape(found["method"])),
        ("state", escape(found["state"])),
        ("status", number(found["status"])),
        ("depth", number(found["depth"])),
        ("callback", escape(found["callback"] or "parse")),
        ("attempts", number(found["attempts"])),
        ("size", number(found["size"])),
        ("fetch time", seconds(found["elapsed"])),
        ("finished", when(found["finished_at"])),
        ("error", escape(found["error"] or "")),
        ("last error", escape(found["error_text"] or "")),
        ("found on", link(f"/page/{parent['id']}", parent["url"] or str(parent["id"]))
         if parent else "(start request)"),
    ]  # fmt: skip
    rows = table(["", ""], [[name, value] for name, value in facts], table_id="page-facts")
    head_rows = [[escape(k), escape(v)] for k, v in found["headers"] or []]
    parts = [
        rows,
        "<h2>Response headers</h2>",
        table(["name", "value"], head_rows, table_id="headers") if head_rows else "<p>none</p>",
        f"<h2>Items ({len(found['items'])})</h2>",
        "".join(
            f"<pre>{escape(json.dumps(i, ensure_ascii=False, indent=1))}</pre>"
            for i in found["items"]
        ) or "<p>none</p>",
        f"<h2>Links queued ({len(found['links'])})</h2>",
        table(
            ["URL", "state"],
            [[link(f"/page/{k['id']}", k["url"]), k["state"]] for k in found["links"]],
            table_id="links",
        ) if found["links"] else "<p>none</p>",
    ]  # fmt: skip
    return "".join(parts)
