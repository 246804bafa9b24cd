"""Time in queries and the as_of filter."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from latentmem import Memory
from latentmem.errors import InvalidInputError
from latentmem.retrieve.intent import asks_when
from latentmem.retrieve.timequery import (
    anchored_window,
    describe_window,
    event_anchor,
    mentioned_window,
    mentions,
    parse_query_time,
)

REF = datetime(2023, 8, 20, 15, 0, tzinfo=UTC)  # a Sunday


def window(query: str) -> tuple[date, date, str] | None:
    w = parse_query_time(query, REF)
    return None if w is None else (w.start.date(), w.end.date(), w.phrase)


@pytest.mark.parametrize(("query", "expected"), [
    ("what did I do last week?", (date(2023, 8, 7), date(2023, 8, 14), "last week")),
    ("and this week?", (date(2023, 8, 14), date(2023, 8, 21), "this week")),
    ("Where was Ana in May 2023?", (date(2023, 5, 1), date(2023, 6, 1), "may 2023")),
    ("what happened in March", (date(2023, 3, 1), date(2023, 4, 1), "march")),
    ("what happened in September", (date(2022, 9, 1), date(2022, 10, 1), "september")),
    ("what about on 8 May, 2023", (date(2023, 5, 8), date(2023, 5, 9), "8 may, 2023")),
    ("the party on July 4", (date(2023, 7, 4), date(2023, 7, 5), "july 4")),
    ("notes from 2023-02-01", (date(2023, 2, 1), date(2023, 2, 2), "2023-02-01")),
    ("what did Mel do yesterday", (date(2023, 8, 19), date(2023, 8, 20), "yesterday")),
    ("three days ago", (date(2023, 8, 16), date(2023, 8, 19), "three days ago")),
    ("in 2022", (date(2022, 1, 1), date(2023, 1, 1), "2022")),
    ("before June what did she paint", (date(1, 1, 2), date(2023, 6, 1), "before june")),
    ("events after July 4", (date(2023, 7, 5), date(9999, 12, 30), "after july 4")),
    ("since March", (date(2023, 3, 1), date(9999, 12, 30), "since march")),
])
def test_time_expressions(query: str, expected: tuple[date, date, str]) -> None:
    assert window(query) == expected


@pytest.mark.parametrize("query", [
    "When did Caroline go to the support group?", "May I ask you something?",
    "what happened on 31 February", "a plain question", "the 2023 report",
])
def test_no_time_expression(query: str) -> None:
    assert window(query) is None


def test_no_reference_no_window() -> None:
    assert parse_query_time("last week", None) is None


@pytest.mark.parametrize(("query", "expected"), [
    ("What did Ana buy before the trip to Oslo?", ("before", "the trip to oslo")),
    ("How did she feel after the accident?", ("after", "the accident")),
    ("What has improved since starting boot camp", ("after", "starting boot camp")),
    ("Which city was John in prior to traveling to Chicago?", ("before", "traveling to chicago")),
    ("What did I read before the move did I say", ("before", "the move")),
    ("How many days before I bought my iPad did I go?", ("before", "i bought my ipad")),
    ("What did we eat after Christmas dinner?", ("after", "christmas dinner")),
])
def test_event_anchors(query: str, expected: tuple[str, str]) -> None:
    assert event_anchor(query) == expected


@pytest.mark.parametrize("query", [
    "What did I do before May 2023?",  # a date: parse_query_time reads it
    "after 2 weeks", "what happened after that?", "before the", "where did I go",
    "What does Ana do after work?", "Do you read before bed?",  # habits, not events
])
def test_no_event_anchor(query: str) -> None:
    assert event_anchor(query) is None


def test_anchored_window_is_near_the_anchor() -> None:
    when = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)
    before = anchored_window("before", when, 30, "the trip")
    assert before.start == datetime(2023, 4, 8, tzinfo=UTC)
    assert before.end == datetime(2023, 5, 9, tzinfo=UTC)  # the anchor's day included
    after = anchored_window("after", when, 30, "the trip")
    assert after.start == datetime(2023, 5, 8, tzinfo=UTC)
    assert after.end == datetime(2023, 6, 8, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("I went to the support group yesterday!", (date(2023, 5, 7), date(2023, 5, 8))),
    ("Busy lately, but yesterday I ran 10k", (date(2023, 5, 7), date(2023, 5, 8))),
    ("Last weekend we went camping", (date(2023, 5, 6), date(2023, 5, 8))),
    ("In March I started pottery", (date(2023, 3, 1), date(2023, 4, 1))),
    ("The piano arrives in June", (date(2023, 6, 1), date(2023, 7, 1))),  # nearest: ahead
    ("The race is on the 3rd of November", (date(2023, 11, 3), date(2023, 11, 4))),
    ("We met on 2 December", (date(2022, 12, 2), date(2022, 12, 3))),
    ("See you today", None), ("I have been busy lately", None), ("No time here", None),
])
def test_mentioned_window(text: str, expected: tuple[date, date] | None) -> None:
    got = mentioned_window(text, datetime(2023, 5, 8, 13, 0, tzinfo=UTC))  # a Monday
    assert (None if got is None else (got[0].date(), got[1].date())) == expected
    assert mentioned_window(text, None) is None


def test_mentions_in_order_without_overlap() -> None:
    when = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)
    got = mentions("Last week, not in May 2023 but three years ago; recently too", when)
    assert [w for _, _, w in got] == ["last week", "may 2023", "three years ago"]
    assert mentions("Last week", None) == []


@pytest.mark.parametrize(("start", "end", "text"), [
    (date(2023, 5, 7), date(2023, 5, 8), "Sun 7 May 2023"),
    (date(2023, 5, 1), date(2023, 5, 8), "1-7 May 2023"),
    (date(2023, 4, 24), date(2023, 5, 1), "24-30 Apr 2023"),
    (date(2023, 4, 28), date(2023, 5, 5), "28 Apr - 4 May 2023"),
    (date(2022, 12, 26), date(2023, 1, 2), "26 Dec 2022 - 1 Jan 2023"),
    (date(2023, 3, 1), date(2023, 4, 1), "March 2023"),
    (date(2022, 1, 1), date(2023, 1, 1), "2022"),
])
def test_describe_window(start: date, end: date, text: str) -> None:
    as_time = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (start, end)]
    assert describe_window(*as_time) == text


@pytest.mark.parametrize(("query", "when"), [
    ("When did Caroline go to the support group?", True),
    ("How long has Ana lived in Porto?", True),
    ("What year did they marry?", True),
    ("How many days before the trip did I buy the tent?", True),
    ("What did Caroline do at the support group?", False),
    ("How many books has Ana read?", False),
    ("Do you remember when did we meet?", True),
    ("How did Ana feel when she won the race?", False),
])
def test_asks_when(query: str, when: bool) -> None:
    assert asks_when(query) is when


def test_context_notes_the_dates_of_relative_times_for_when_questions(mem: Memory) -> None:
    mem.add([{"role": "user", "name": "Ana", "content": "I went to the support group yesterday!"},
             {"role": "user", "name": "Bo", "content": "Two weeks ago I sold my bike, in May 2023"}],
            user_id="u", session_id="s1", event_time="2023-05-08T13:00")
    ctx = mem.context("When did Ana go to the support group?", user_id="u")
    assert "[1] Ana: I went to the support group yesterday! (yesterday: Sun 7 May 2023)" in ctx.text
    # "about" the middle of an "ago"; a date the text spells out gets no note.
    assert "(two weeks ago: about Mon 24 Apr 2023)" in ctx.text and "may 2023:" not in ctx.text
    assert ctx.used_tokens <= ctx.budget_tokens
    assert ctx.items[0].text == "I went to the support group yesterday!"  # the item stays verbatim
    plain = mem.context("What did Ana do at the support group?", user_id="u")
    assert "(yesterday" not in plain.text
    with Memory(mem.home, embedder="hash", context_dates=False) as off:
        assert "(yesterday" not in off.context("When did Ana go there?", user_id="u").text


def test_event_anchor_boosts_the_time_before_the_event(mem: Memory) -> None:
    mem.add("Bought a new tent and a stove", user_id="u", event_time="2023-06-25T10:00")
    mem.add("Bought a new lamp for the office", user_id="u", event_time="2023-01-10T10:00")
    mem.add("We flew to Oslo for the fjord trip", user_id="u", event_time="2023-07-01T10:00")
    hits = {h.record.text.split()[3]: h for h in
            mem.search("What did I buy before the fjord trip?", user_id="u", k=3)}
    assert hits["tent"].components["time"] > 0  # five days before the trip
    assert "time" not in hits["lamp"].components  # half a year before
    with Memory(mem.home, embedder="hash", anchor_days=0) as off:
        assert all("time" not in h.components
                   for h in off.search("What did I buy before the fjord trip?", user_id="u", k=3))


def test_a_time_the_text_mentions_counts_for_the_window(mem: Memory) -> None:
    mem.add("I went to the support group yesterday", user_id="u", event_time="2023-05-08T13:00")
    mem.add("Went to the support group again", user_id="u", event_time="2023-05-20T13:00")
    hits = {h.record.text: h for h in mem.search("support group on 7 May 2023", user_id="u", k=2)}
    said = hits["I went to the support group yesterday"].components  # on 8 May, about 7 May
    assert said["time"] > 0 and said["time_mentioned"] == 1.0
    assert "time" not in hits["Went to the support group again"].components
    with Memory(mem.home, embedder="hash", time_mentions=False) as off:
        hits = off.search("support group on 7 May 2023", user_id="u", k=2)
        assert all("time" not in h.components for h in hits)


def _diary(m: Memory) -> None:
    m.add("Walked the dog along the river", user_id="u", event_time="2023-05-03T09:00")
    m.add("Walked the dog in the park", user_id="u", event_time="2023-08-15T09:00")
    m.add("Booked a dentist appointment", user_id="u", event_time="2023-08-19T09:00")


def test_query_time_boosts_the_window(mem: Memory) -> None:
    _diary(mem)
    hits = mem.search("walked the dog in May", user_id="u", k=2)
    assert "river" in hits[0].record.text
    assert hits[0].components["time"] > 0
    hits = mem.search("walked the dog last week", user_id="u", k=2)
    assert "park" in hits[0].record.text


def test_now_is_when_the_query_is_asked_and_hides_nothing(mem: Memory) -> None:
    _diary(mem)
    # Read from the latest memory (19 Aug), "last week" is the park walk ...
    assert "park" in mem.search("walked the dog last week", user_id="u", k=1)[0].record.text
    # ... asked on 10 May, it is the river walk, and the later memories stay findable.
    hits = mem.search("walked the dog last week", user_id="u", k=5, now="2023-05-10T12:00")
    assert "river" in hits[0].record.text and hits[0].components["time"] > 0
    assert len(hits) == 3
    ctx = mem.context("walked the dog last week", user_id="u", now="2023-05-10T12:00")
    assert ctx.items and "river" in ctx.text
    with pytest.raises(InvalidInputError, match="now"):
        mem.search("walked the dog", user_id="u", now="next blursday")


def test_as_of_hides_later_memories(mem: Memory) -> None:
    _diary(mem)
    hits = mem.search("walked the dog", user_id="u", k=5, as_of="2023-06-01")
    assert [h.record.text for h in hits] == ["Walked the dog along the river"]
    ctx = mem.context("dentist", user_id="u", as_of="2023-06-01")
    assert "dentist" not in ctx.text
    assert mem.search("dentist", user_id="u", k=5, as_of="2023-08-19T09:00")


def test_time_boost_can_be_switched_off(tmp_path) -> None:
    with Memory(tmp_path / "s", embedder="hash", time_boost=0.0) as m:
        _diary(m)
        hits = m.search("walked the dog in May", user_id="u", k=3)
        assert all("time" not in h.components for h in hits)


def test_supersedes_keeps_the_old_fact_for_the_past(mem: Memory) -> None:
    old = mem.add("I live in Lisbon", user_id="ana", event_time="2022-01-10").ids[0]
    new = mem.add("I moved to Porto, I live in Porto now", user_id="ana",
                  event_time="2023-05-08", supersedes=old).ids[0]
    before = mem.get(old)
    assert before.superseded_by == new and before.valid_to is not None
    assert before.valid_to.date() == date(2023, 5, 8)
    assert (new, old, "supersedes") in {(e.src, e.dst, e.type) for e in mem.edges(old)}
    assert mem.history(old)[-1]["event"] == "SUPERSEDED"
    hits = mem.search("where do I live", user_id="ana", k=2)
    assert hits[0].id == new and hits[1].components["superseded"] == 0.5
    past = mem.search("where do I live", user_id="ana", k=2, as_of="2023-01-01")
    assert [h.id for h in past] == [old]


def test_supersedes_refuses_unknown_and_foreign_ids(mem: Memory) -> None:
    from latentmem.errors import InvalidInputError, NotFoundError

    bob = mem.add("Bob's note", user_id="bob").ids[0]
    with pytest.raises(NotFoundError):
        mem.add("x", user_id="ana", supersedes=bob)
    with pytest.raises(NotFoundError):
        mem.add("x", user_id="ana", supersedes="no-such-id")
    with pytest.raises(InvalidInputError):
        mem.add("x", user_id="ana", supersedes=[""])
    assert mem.all(user_id="ana") == [] and mem.get(bob).valid_to is None


@pytest.mark.sqlite_only
def test_record_scope_follows_records(mem: Memory) -> None:
    """The narrow scope table that BM25 filters on is kept exact by triggers."""
    a = mem.add("first note", user_id="ana", session_id="s", event_time="2023-01-01").ids[0]
    b = mem.add("second note", user_id="ana", event_time="2023-02-01", supersedes=a).ids[0]
    c = mem.add("bob's note", user_id="bob").ids[0]
    mem.update(b, event_time="2023-03-01")
    mem.delete(c)

    def rows(table: str) -> list[tuple]:
        with mem.store.lock:
            return mem.store.conn.execute(
                f"SELECT rowid, user_id, agent_id, session_id, event_time, valid_to FROM {table} "
                "ORDER BY rowid").fetchall()

    assert rows("records") == rows("record_scope") and len(rows("records")) == 2
