"""Parsing the times callers give us (not yet time expressions inside queries).

Accepted: ``datetime`` (naive means UTC), Unix seconds, ISO-8601 strings
("2023-05-08", "2023-05-08T13:56", with or without offset, "Z" included), and
the "1:56 pm on 8 May, 2023" form that LoCoMo and many chat exports use.
Anything else is an ``InvalidInputError`` naming the accepted forms, and so is a time
outside 0001-01-02 .. 9999-12-30 UTC: stored as Unix seconds, ``datetime.max`` reads back
as the year 10000, which ``datetime`` refuses, and an edge of the range given with an
offset overflows on the way to UTC.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime

from latentmem.errors import InvalidInputError

_FORMATS = (
    "%I:%M %p on %d %B, %Y",
    "%I:%M %p on %d %b, %Y",
    "%I:%M %p on %B %d, %Y",
    "%Y/%m/%d (%a) %H:%M",  # LongMemEval haystack dates
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d %B %Y",
    "%d %B, %Y",
    "%B %d, %Y",
    "%d %b %Y",
    "%b %d, %Y",
)
# Earliest and latest accepted instants: anything outside is almost surely a unit mix-up.
_MIN = datetime(1, 1, 2, tzinfo=UTC)
_MAX = datetime(9999, 12, 30, tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time(value: object, field: str = "event_time") -> datetime | None:
    try:
        result = _parse(value, field)
    except OverflowError:  # an edge of the range, with an offset, on its way to UTC
        result = datetime.min.replace(tzinfo=UTC)
    if result is not None and not _MIN <= result <= _MAX:
        raise InvalidInputError(f"{field}: {_shown(value)} is out of range; expected a time "
                                f"from {_MIN.date()} to {_MAX.date()} (UTC)")
    return result


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _parse(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, bool):
        raise InvalidInputError(f"{field}: expected a date-time, found a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{field}: expected a finite Unix time, found {value}")
        try:
            result = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidInputError(f"{field}: Unix time {value} is out of range") from exc
        return result
    if isinstance(value, str):
        text = " ".join(value.strip().split())
        if not text:
            raise InvalidInputError(f"{field}: expected a date-time, found an empty string")
        iso = text[:-1] + "+00:00" if text.endswith("Z") else text
        try:
            return _aware(datetime.fromisoformat(iso))
        except ValueError:
            pass
        cleaned = re.sub(r"\s+", " ", text)
        for fmt in _FORMATS:
            try:
                return _aware(datetime.strptime(cleaned, fmt))
            except ValueError:
                continue
        raise InvalidInputError(
            f"{field}: cannot read {_shown(value)} as a date-time; expected ISO-8601 "
            "(e.g. 2023-05-08T13:56), Unix seconds, or '1:56 pm on 8 May, 2023'"
        )
    raise InvalidInputError(
        f"{field}: expected a datetime, ISO-8601 string or Unix seconds; found {type(value).__name__}"
    )
