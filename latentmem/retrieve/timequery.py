"""Time expressions inside queries: "last week", "in May 2023", "3 days ago", "before June".

``parse_query_time(query, reference)`` returns the window the query points at,
or ``None``. Retrieval uses it as a soft boost (memories whose event time lies
in the window gain ``time_boost``), never as a hard filter: a wrong parse then
costs a little ranking, not the answer. ``as_of`` is the hard filter.

The reference instant ("now" for "last week") is the ``as_of`` of the search
when given, otherwise the newest event time in the scope: for a live assistant
that is about the wall clock, and for an imported archive it is the archive's
own present, so "last month" keeps meaning what the speaker meant.

Recognised, case-insensitive: today, yesterday, tonight, this morning, last
night; this/last/past week, month, year, weekend; N (or a, a few, a couple of)
days/weeks/months/years ago; in/during <month> [<year>]; in <year>; on/at
<day> <month> [<year>] and <month> <day>[, <year>]; ISO dates; the words
before/after/since in front of any of these; "recently" and "lately" (the last
30 days). A month without a year is its latest occurrence not after the
reference. Rejected: a full date grammar (dateparser-style libraries would be a
heavy dependency, and queries rarely carry more than these forms).

Events as anchors. "What did Ana do before the trip to Oslo?" names no date:
its time is that of a memory. ``event_anchor`` finds "before"/"after"/"since"/
"until"/"prior to" followed by words that are not a time expression and that
open like one event ("the trip", "my surgery", "meeting Maria", "I bought my
iPad", "Christmas"; not a habit like "after work" or "before bed"), and
``anchored_window`` turns the anchor's event time into a window *near* it: the
``days`` before it (the anchor's own day included) or the ``days`` after.
Near, because "what did she do after the accident" asks about the aftermath,
not about everything since; the boost stays soft. The caller finds the anchor
(``Memory.search``: the best BM25 match of the phrase in the scope).

Times a memory mentions. A message sent on 8 May that says "I went to the
support group yesterday" is about 7 May: its record time is not its event's
time. ``mentioned_window(text, when)`` reads the first time expression of a
memory's text against the memory's own time ("yesterday", "last weekend", "two
weeks ago", "in March"), and retrieval counts a memory as inside a query's
window when either its time or the time it mentions falls in it. Vague words
("recently", "lately") and "today" (the memory's own day) are not mentions. A
month or day without a year is the occurrence nearest the memory's time, which
may lie ahead ("the piano arrives in April", said in February), where a query's
"in April" is the last one.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS.pop("may", None)
_MONTHS["may"] = 5
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "a few": 3, "a couple of": 2, "few": 3, "several": 4}


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime  # exclusive
    phrase: str  # the words of the query it came from

    def contains(self, when: datetime | None) -> bool:
        return when is not None and self.start <= when < self.end


def _day(d: datetime) -> datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _latest_month(month: int, ref: datetime) -> int:
    return ref.year if month <= ref.month else ref.year - 1


def _base_window(text: str, ref: datetime) -> tuple[datetime, datetime, str] | None:
    """The first time expression in ``text`` (lowercased) and its span."""
    return _first(_windows(text, ref), text)


def _first(found: list[tuple[int, int, datetime, datetime]],
           text: str) -> tuple[datetime, datetime, str] | None:
    if not found:
        return None
    first = min(start for start, *_ in found)
    # Of the expressions that start first, the longest: "May 2023" over "May".
    start, end, lo, hi = max((f for f in found if f[0] == first), key=lambda f: f[1])
    return lo, hi, text[start:end]


def _windows(text: str, ref: datetime) -> list[tuple[int, int, datetime, datetime]]:
    """Every time expression in ``text`` (lowercased): (start, end, window start, end)."""
    today = _day(ref)
    rules: list[tuple[str, object]] = [
        (r"\b(today|tonight|this morning|this afternoon|this evening)\b",
         lambda m: (today, today + timedelta(days=1))),
        (r"\b(yesterday|last night)\b",
         lambda m: (today - timedelta(days=1), today)),
        (r"\b(recently|lately|these days)\b",
         lambda m: (today - timedelta(days=30), today + timedelta(days=1))),
        (r"\b(this|last|past|previous) (week|month|year|weekend)\b", _relative),
        (r"\b(\d+|a few|a couple of|an|a|one|two|three|four|five|six|several|few) "
         r"(day|week|month|year)s? ago\b", _ago),
        (rf"\b(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MONTH_RE})\.?,? ?(\d{{4}})?\b", _day_month),
        (rf"\b({_MONTH_RE})\.? (\d{{1,2}})(?:st|nd|rd|th)?\b,? ?(\d{{4}})?", _month_day),
        (r"\b(\d{4})-(\d{2})-(\d{2})\b", _iso),
        (rf"\b({_MONTH_RE})\.?,? (\d{{4}})\b", _month_year),
        (rf"\b(?:in|during|of|since|before|after|until|by) (?:early |late |mid-?)?({_MONTH_RE})\b",
         _month_only),
        (r"\b(?:in|during|since|before|after|until|of) (19\d\d|20\d\d)\b", _year),
    ]
    found: list[tuple[int, int, datetime, datetime]] = []
    for pattern, build in rules:
        # The month and year rules need a preposition ("in May", not "May I ask"), but
        # the phrase is the month or year itself, so "before" in front is still seen.
        core = 1 if build in (_month_only, _year) else 0
        for m in re.finditer(pattern, text):
            try:
                window = build(m, ref) if build in _NEEDS_REF else build(m)  # type: ignore[operator]
            except ValueError:  # "31 February"
                continue
            found.append((m.start(core), m.end(core), window[0], window[1]))
    return found


def _relative(m: re.Match[str], ref: datetime) -> tuple[datetime, datetime]:
    which, unit = m.group(1), m.group(2)
    today = _day(ref)
    if unit in ("week", "weekend"):
        monday = today - timedelta(days=today.weekday())
        start = monday if which == "this" else monday - timedelta(days=7)
        if unit == "weekend":
            start += timedelta(days=5)
            return start, start + timedelta(days=2)
        return start, start + timedelta(days=7)
    if unit == "month":
        if which == "this":
            return _month_window(ref.year, ref.month)
        prev = ref.replace(day=1) - timedelta(days=1)
        return _month_window(prev.year, prev.month)
    year = ref.year if which == "this" else ref.year - 1
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def _ago(m: re.Match[str], ref: datetime) -> tuple[datetime, datetime]:
    raw = m.group(1)
    count = int(raw) if raw.isdigit() else _COUNT[raw]
    days = count * _UNITS[m.group(2)]
    centre = _day(ref) - timedelta(days=days)
    slack = timedelta(days=max(1, days // 4)) if m.group(2) != "day" else timedelta(days=1)
    return centre - slack, centre + slack + timedelta(days=1)


def _day_month(m: re.Match[str], ref: datetime) -> tuple[datetime, datetime]:
    month = _MONTHS[m.group(2)]
    year = int(m.group(3)) if m.group(3) else _latest_month(month, ref)
    start = datetime(year, month, int(m.group(1)), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _month_day(m: re.Match[str], ref: datetime) -> tuple[datetime, datetime]:
    month = _MONTHS[m.group(1)]
    year = int(m.group(3)) if m.group(3) else _latest_month(month, ref)
    start = datetime(year, month, int(m.group(2)), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _iso(m: re.Match[str]) -> tuple[datetime, datetime]:
    start = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _month_year(m: re.Match[str]) -> tuple[datetime, datetime]:
    return _month_window(int(m.group(2)), _MONTHS[m.group(1)])


def _month_only(m: re.Match[str], ref: datetime) -> tuple[datetime, datetime]:
    month = _MONTHS[m.group(1)]
    return _month_window(_latest_month(month, ref), month)


def _year(m: re.Match[str]) -> tuple[datetime, datetime]:
    year = int(m.group(1))
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


_NEEDS_REF = {_relative, _ago, _day_month, _month_day, _month_only}
_FAR_PAST = datetime(1, 1, 2, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 12, 30, tzinfo=UTC)


def parse_query_time(query: str, reference: datetime | None) -> TimeWindow | None:
    """The window a query's time expression points at, or None (no expression, no reference)."""
    if reference is None:
        return None
    text = " ".join(query.lower().split())
    found = _base_window(text, reference)
    if found is None:
        return None
    start, end, phrase = found
    where = text.find(phrase)
    before = text[:where].rstrip().rsplit(" ", 1)[-1] if where > 0 else ""
    if before in ("before", "until", "by", "prior"):
        return TimeWindow(_FAR_PAST, start, f"{before} {phrase}")
    if before in ("after", "since"):
        return TimeWindow(end if before == "after" else start, _FAR_FUTURE, f"{before} {phrase}")
    return TimeWindow(start, end, phrase)


# "before the trip to Oslo", "after receiving the award", "since starting boot camp".
_ANCHOR = re.compile(r"\b(before|after|since|until|prior to)\s+([^?.!,;:]+)")
# Where an anchor phrase ends: the next clause ("before the trip did she ...").
_CLAUSE = frozenset(
    "did does do was were is are has have had will would could should can when while and "
    "but or so then because if that which who".split()
)
_FILLER = frozenset("the a an my his her their our your its this that".split())
ANCHOR_WORDS = 6
# An event phrase opens with a determiner or possessive ("the trip", "my surgery"), a
# subject ("I bought my iPad"), a gerund ("meeting Maria") or a name ("Christmas").
_SUBJECTS = frozenset("i we he she they you".split())
_DURATION = frozenset(("minute", "hour", "day", "night", "week", "weekend", "month", "year"))


def event_anchor(query: str) -> tuple[str, str] | None:
    """("before" | "after", phrase) when the query places itself relative to an event
    rather than a date; None when it has no such phrase (or names a date there, which
    ``parse_query_time`` reads)."""
    original = " ".join(query.split())
    text = original.lower()  # same length: offsets carry over
    for m in _ANCHOR.finditer(text):
        words: list[str] = []
        for word in m.group(2).split():
            if word in _CLAUSE and words:
                break
            words.append(word)
            if len(words) == ANCHOR_WORDS:
                break
        if not any(w not in _FILLER and not w.isdigit() for w in words):
            continue
        first = words[0]
        if not (first in _FILLER or first in _SUBJECTS or (first.endswith("ing") and len(first) > 4)
                or original[m.start(2)].isupper()):
            continue  # "after work", "before bed": a habit, not one event
        if len(words) > 1 and (words[0].isdigit() or words[0] in _COUNT) \
                and words[1].rstrip("s") in _DURATION:
            continue  # "after 2 weeks", "before a few days": a duration, not an event
        phrase = " ".join(words)
        if _base_window(phrase, datetime(2000, 1, 1, tzinfo=UTC)) is not None:
            continue  # "before May 2023": a date, not an event
        relation = "after" if m.group(1) in ("after", "since") else "before"
        return relation, phrase
    return None


def anchored_window(relation: str, when: datetime, days: float, phrase: str) -> TimeWindow:
    """The window ``days`` before (``relation`` "before") or after the anchor's day,
    the anchor's day included."""
    day = _day(when)
    span = timedelta(days=days)
    if relation == "before":
        return TimeWindow(day - span, day + timedelta(days=1), f"before {phrase}")
    return TimeWindow(day, day + timedelta(days=1) + span, f"after {phrase}")


_VAGUE = frozenset(("recently", "lately", "these days", "today", "tonight", "this morning",
                    "this afternoon", "this evening"))


# Every expression the grammar reads holds one of these words; most short messages hold
# none, and one search for them is far cheaper than the grammar (a dozen patterns, each
# tried at every word: ~0.18 ms on a 1,000-character message).
_HINT = re.compile(
    r"\b(?:yesterday|night|days?|weeks?|weekends?|months?|years?|ago|"
    rf"\d{{4}}|{_MONTH_RE})\b",
    re.IGNORECASE,
)
MENTION_CHARS = 1000  # only the start of a long memory is read for a mention


def mentions(text: str, when: datetime | None,
             limit: int = 3) -> list[tuple[datetime, datetime, str]]:
    """The first ``limit`` (not vague, not overlapping) time expressions of a memory's
    ``text``, read against the memory's own time ``when``: (window start, end, the
    words), in the order of the text; none without ``when``."""
    if when is None or not text:
        return []
    text = text[:MENTION_CHARS]
    if not _HINT.search(text):
        return []
    low = " ".join(text.lower().split())
    found = sorted((f for f in _windows(low, when) if low[f[0]:f[1]] not in _VAGUE),
                   key=lambda f: (f[0], -f[1]))  # at each start, the longest first
    out: list[tuple[datetime, datetime, str]] = []
    reached = 0
    for start, end, lo, hi in found:
        if start >= reached:
            words = low[start:end]
            if _MONTH_WORD.search(words) and not _YEAR_WORD.search(words):
                lo, hi = _nearest_year(lo, hi, when)
            out.append((lo, hi, words))
            reached = end
            if len(out) == limit:
                break
    return out


_MONTH_WORD = re.compile(rf"\b(?:{_MONTH_RE})\b")
_YEAR_WORD = re.compile(r"\b\d{4}\b")


def _nearest_year(lo: datetime, hi: datetime, when: datetime) -> tuple[datetime, datetime]:
    """A month or day named without a year in a memory ("it arrives in April", "the race
    is on 3 November") is the occurrence nearest the memory's time, which may be ahead of
    it; a query's "in April" is the last one (``parse_query_time``)."""
    try:
        ahead = (lo.replace(year=lo.year + 1), hi.replace(year=hi.year + 1))
    except ValueError:  # 29 February
        return lo, hi
    return ahead if ahead[0] - when < when - lo else (lo, hi)


def mentioned_window(text: str, when: datetime | None) -> tuple[datetime, datetime] | None:
    """The window of the first time a memory's ``text`` mentions (see ``mentions``)."""
    found = mentions(text, when, 1)
    return (found[0][0], found[0][1]) if found else None


def day_label(day: datetime) -> str:
    """"Sun 7 May 2023": how a day is shown to a reader (context headers and notes)."""
    return f"{day.strftime('%a')} {day.day} {day.strftime('%b %Y')}"


def describe_window(start: datetime, end: datetime) -> str:
    """A window as a reader wants it: "Sun 7 May 2023", "1-7 May 2023", "May 2023", "2023"."""
    last = end - timedelta(days=1)
    if end - start <= timedelta(days=1):
        return day_label(start)
    if start.day == 1 and end.day == 1 and start.month == 1 and end.year == start.year + 1:
        return str(start.year)
    if start.day == 1 and end.day == 1 and (end - start).days <= 31:
        return start.strftime("%B %Y")
    if (start.year, start.month) == (last.year, last.month):
        return f"{start.day}-{last.day} {last.strftime('%b %Y')}"
    if start.year == last.year:
        return f"{start.day} {start.strftime('%b')} - {last.day} {last.strftime('%b %Y')}"
    return f"{start.day} {start.strftime('%b %Y')} - {last.day} {last.strftime('%b %Y')}"
