"""Exporters: stored items as JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO


def write_jsonl(items: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One JSON object a line; returns the count."""
    count = 0
    for item in items:
        out.write(json.dumps(item, ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def write_csv(items: Callable[[], Iterable[dict[str, Any]]], out: TextIO) -> int:
    """A header row (every field seen, in order of first appearance), then one row an item.

    Lists and objects are written as JSON. `items` is called twice (the first pass finds
    the columns), so no more than one item is held in memory.
    """
    columns: dict[str, None] = {}
    for item in items():
        columns.update(dict.fromkeys(item))
    writer = csv.writer(out)
    writer.writerow(columns)
    count = 0
    for item in items():
        writer.writerow(_cell(item.get(column)) for column in columns)
        count += 1
    return count


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value
