"""Dates as sitemaps and settings write them: W3C datetimes and ISO dates."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime


def parse_when(text: str) -> datetime | None:
    """A W3C datetime or ISO date as an aware datetime (UTC when no zone is given)."""
    text = text.strip()
    if re.fullmatch(r"\d{4}(-\d{2})?", text):
        text = (text + "-01-01")[:10] if len(text) == 4 else text + "-01"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
