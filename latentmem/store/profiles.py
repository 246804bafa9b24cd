"""Storage profiles: how much a store spends on each memory, chosen when it is created.

``default`` keeps every memory losslessly at no cost in recall: texts compressed with a
dictionary trained on the store (``textcodec.py``), derivable fields not stored (index
text, summary, content hash), int8 vectors (the FAISS index only proposes candidates,
and on LoCoMo dev int8 kept R@10 and context recall to the third digit).

``compact`` gives up what only speed, exact BM25 term counts or features that are off by
default needed: PQ vectors with two dimensions per 4-bit code (96 bytes at 384-d), a
full-text index without positions or counts (FTS5 ``detail=none``: BM25 then counts a
word once per memory, which short turns rarely repeat anyway), no secondary indexes on
speaker, time and session, no entity mentions or ``entity`` edges (what the entity hop
follows, and it is off by default; the graph view then shows no entity links), no
embedding cache inside the store (a float32 vector per text; ``embed_cache_path`` still
names a shared one), and 1 KB pages (a store of a few hundred memories otherwise pays a
4 KB page per empty table).

Measured in BENCHMARKS.md, "Storage profiles"; ``docs/compact.md`` has what each lever
saved and cost, and what was rejected. The profile is kept in ``meta``; a store from
before profiles is a ``default`` store with whatever vector tier it was made with.
PostgreSQL stores serve ``default`` only (their vectors are pgvector columns and their
full-text index is PostgreSQL's own).
"""

from __future__ import annotations

from dataclasses import dataclass

from latentmem.errors import InvalidInputError


@dataclass(frozen=True)
class Profile:
    name: str
    vector_tier: str  # the tier of a new store unless vector_tier is given
    fts_detail: str  # FTS5's detail option for a new store: "full" or "none"
    page_size: int  # SQLite page size of a new store
    lean_indexes: bool  # drop the secondary indexes on speaker, time and session
    pq_sub_dims: int  # dimensions per PQ sub-quantizer when the tier is pq (bytes: dim / 2 / this)
    entities: bool  # keep entity mentions and `entity` edges (graph/entities.py)
    embed_cache: bool  # keep the embedding cache in the store (when Config.embed_cache is on)


PROFILES: dict[str, Profile] = {
    "default": Profile("default", "int8", "full", 4096, False, 1, True, True),
    "compact": Profile("compact", "pq", "none", 1024, True, 2, False, False),
}
DEFAULT_PROFILE = "default"
# The indexes a lean store drops (their queries then read record_scope or scan the user).
LEAN_DROPPED = ("records_user_speaker", "records_user_time", "records_user_session")


def check_profile(name: object) -> Profile:
    if name not in PROFILES:
        raise InvalidInputError(f"profile must be one of {list(PROFILES)}, found {name!r}")
    return PROFILES[str(name)]
