"""A query that names the scope's user is also read in the first person (retrieve/person.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentmem import Memory
from latentmem.retrieve.person import first_person, names_of


def test_names_come_from_the_scope_id_and_only_when_they_are_names() -> None:
    assert names_of("ana") == ["ana"]
    assert names_of("acme:ana") == ["ana"]  # a tenant's user
    assert names_of("ana.silva") == ["ana silva", "silva", "ana"]
    assert names_of("default") == names_of("user_123") == names_of("conv-26") == []
    assert names_of(None) == names_of("") == []


@pytest.mark.parametrize(("query", "read"), [
    ("where does ana live", "where do I live"),
    ("what is Ana's job", "what is my job"),
    ("Ana is a nurse?", "I am a nurse?"),
    ("has ana been to Paris", "have I been to Paris"),
    ("tell me about Ana", "tell me about me"),
    ("when did Ana Silva move", "when did I move"),
    ("what did Ana say to Bob", "what did I say to Bob"),
])
def test_a_query_naming_the_user_reads_in_the_first_person(query: str, read: str) -> None:
    assert first_person(query, names_of("ana.silva")) == read


def test_a_query_that_does_not_name_the_user_is_left_alone() -> None:
    assert first_person("banana bread recipe", names_of("ana")) is None
    assert first_person("where does Bea live", names_of("ana")) is None


@pytest.mark.slow
@pytest.mark.parametrize("user", ["ana", "acme:ana"])
def test_the_users_own_words_answer_a_question_that_names_her(
        tmp_path: Path, minilm, user: str) -> None:  # type: ignore[no-untyped-def]
    with Memory(tmp_path / "store", embedder=minilm) as m:
        m.add("I moved to Lisbon in May 2023", user_id=user)
        m.add("My sister Bea works as a nurse in Porto", user_id=user)
        assert m.search("where does ana live", user_id=user)[0].text.startswith("I moved to")
        assert m.search("where does Ana's sister work", user_id=user)[0].text.startswith("My sister")
        m.config = m.config.replace(first_person=False)  # what it was before
        assert m.search("where does ana live", user_id=user)[0].text.startswith("My sister")


@pytest.mark.slow
def test_the_mirror_bea_s_own_words_for_a_question_naming_bea(
        tmp_path: Path, minilm) -> None:  # type: ignore[no-untyped-def]
    with Memory(tmp_path / "store", embedder=minilm) as m:
        m.add("I work as a nurse in Porto", user_id="bea")
        m.add("My sister Ana moved to Lisbon in May 2023", user_id="bea")
        assert m.search("where does bea work", user_id="bea")[0].text.startswith("I work")
        assert m.search("where does Bea's sister live", user_id="bea")[0].text.startswith("My sister")
        ctx = m.context("what is bea's job", user_id="bea", budget_tokens=20)
        assert "nurse" in ctx.text
