"""What a store can verify about itself, and the derived parts it can rebuild.

``latentmem check`` (``Memory.check``) asks the store for ``integrity()`` and then compares
the vector index with the store (``latentmem/check.py``). Each problem is one line that
names the check it comes from. ``repair()`` rebuilds only what is derived from the
records (the full-text index, the scope table, dangling edges and entity mentions): it
never touches a record, so running it cannot lose a memory. A damaged records table is
not repaired here; RELIABILITY.md, "Recovery", says how to get back to a good store.

What each backend can see:
- SQLite keeps no page checksums, so a flipped bit inside a stored value is invisible to
  SQLite itself. ``PRAGMA integrity_check`` finds damaged pages and index entries; FTS5's
  ``integrity-check`` (with the content comparison) finds a text that no longer matches
  its full-text entry, which is how a changed text byte shows; the vector index check
  finds a changed vector byte (the FAISS file is a second copy, with CRCs).
- PostgreSQL checksums pages itself where the cluster was initialised with them; here the
  check covers what latentmem keeps consistent by hand: the BM25 statistics, dangling
  edges and mentions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from latentmem.errors import StoreCorruptError

# Edges whose ends are neither a live memory nor an archived one (merged_from edges point
# at archived sources, by design).
_DANGLING_EDGES = (
    "SELECT count(*) FROM {edges} e WHERE NOT EXISTS (SELECT 1 FROM {records} r WHERE r.id = "
    "e.{end}) AND NOT EXISTS (SELECT 1 FROM {archive} a WHERE a.id = e.{end})")
_DELETE_DANGLING_EDGES = (
    "DELETE FROM {edges} WHERE NOT EXISTS (SELECT 1 FROM {records} r WHERE r.id = "
    "{edges}.{end}) AND NOT EXISTS (SELECT 1 FROM {archive} a WHERE a.id = {edges}.{end})")


class _Fetching(Protocol):
    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def iter_vectors(self, batch: int = 10_000) -> Any: ...

    def get_meta(self, key: str) -> str | None: ...

    def count(self, scope: Any = None) -> int: ...


def _vector_problems(store: _Fetching) -> list[str]:
    dim = store.get_meta("dim")
    if dim is None:
        return ["meta: the store holds memories but no embedder"] if store.count() else []
    bad_shape = bad_values = 0
    for _, rowids, vectors in store.iter_vectors():
        if vectors.ndim != 2 or vectors.shape[1] != int(dim):
            bad_shape += len(rowids)
        else:
            bad_values += int((~np.isfinite(vectors).all(axis=1)).sum())
    problems = []
    if bad_shape:
        problems.append(f"vectors: {bad_shape} stored vectors are not {dim}-d")
    if bad_values:
        problems.append(f"vectors: {bad_values} stored vectors hold NaN or infinity")
    return problems


def _dangling(store: _Fetching, names: dict[str, str]) -> list[str]:
    problems = []
    for end in ("src", "dst"):
        n = int(store._fetch(_DANGLING_EDGES.format(end=end, **names))[0][0])
        if n:
            problems.append(f"orphans: {n} edges whose {end} is no memory")
    return problems


class SQLiteIntegrity:
    """``integrity``/``repair`` for SQLiteStore (a mixin: it uses the store's connection)."""

    _NAMES = {"edges": "edges", "records": "records", "archive": "archive"}

    def integrity(self: Any) -> list[str]:
        problems: list[str] = []
        try:
            found = [line for r in self._fetch("PRAGMA integrity_check(50)")
                     for line in str(r[0]).splitlines() if not line.startswith("***")]
        except StoreCorruptError as exc:
            return [f"sqlite: {exc}"]
        if found != ["ok"]:
            problems += [f"sqlite: {line}" for line in found]
            return problems  # what follows reads the damaged pages again
        if not self._text_index_matches():
            problems.append("full-text: the full-text index does not match the memories' "
                            "texts (a text changed outside latentmem, or the index is damaged)")
        missing, extra = self.text_index_disagreement()
        if missing or extra:
            problems.append(f"full-text: {missing} memories missing from the full-text index, "
                            f"{extra} entries of memories that are gone")
        problems += _dangling(self, self._NAMES)
        mentions = int(self._fetch("SELECT count(*) FROM entity_mentions m WHERE NOT EXISTS "
                                   "(SELECT 1 FROM records r WHERE r.rowid = m.rowid_)")[0][0])
        if mentions:
            problems.append(f"orphans: {mentions} entity mentions of memories that are gone")
        scope = int(self._fetch(
            "SELECT (SELECT count(*) FROM records r WHERE NOT EXISTS (SELECT 1 FROM record_scope "
            "s WHERE s.rowid = r.rowid AND s.user_id = r.user_id AND s.agent_id IS r.agent_id "
            "AND s.session_id IS r.session_id AND s.event_time IS r.event_time "
            "AND s.valid_to IS r.valid_to)) + (SELECT count(*) FROM record_scope s WHERE NOT "
            "EXISTS (SELECT 1 FROM records r WHERE r.rowid = s.rowid))")[0][0])
        if scope:
            problems.append(f"scope table: {scope} rows disagree with the memories")
        epoch = self.get_meta("vector_epoch")
        if epoch is None or not epoch.lstrip("-").isdigit():
            problems.append(f"meta: the vector epoch is {epoch!r}, not a number")
        return problems + _vector_problems(self)

    def _text_index_matches(self: Any) -> bool:
        """FTS5's integrity-check with rank 1, which also compares the index with the texts
        it was built from. A lossy memory has no entry at all (``_unindex_texts``) where
        the check expects an empty one, so empty entries are put in first, inside a
        transaction that is always rolled back: the check changes nothing."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "INSERT INTO records_fts(rowid, index_text) SELECT r.rowid, '' FROM records r "
                    "WHERE r.text IS NULL AND r.index_text = '' AND NOT EXISTS "
                    "(SELECT 1 FROM records_fts_docsize d WHERE d.id = r.rowid)")
                self.conn.execute("INSERT INTO records_fts(records_fts, rank) "
                                  "VALUES ('integrity-check', 1)")
            except StoreCorruptError:
                return False
            finally:
                self.conn.execute("ROLLBACK")
        return True

    def repair(self: Any) -> list[str]:
        done = ["rebuilt the full-text index"]
        self.rebuild_text_index()
        with self.transaction() as conn:
            for end in ("src", "dst"):
                gone = conn.execute(_DELETE_DANGLING_EDGES.format(end=end, **self._NAMES)).rowcount
                if gone:
                    done.append(f"removed {gone} edges whose {end} was no memory")
            gone = conn.execute("DELETE FROM entity_mentions WHERE NOT EXISTS (SELECT 1 FROM "
                                "records r WHERE r.rowid = entity_mentions.rowid_)").rowcount
            if gone:
                done.append(f"removed {gone} entity mentions of memories that are gone")
            conn.execute("DELETE FROM record_scope")
            conn.execute("INSERT INTO record_scope(rowid, user_id, agent_id, session_id, "
                         "event_time, valid_to) SELECT rowid, user_id, agent_id, session_id, "
                         "event_time, valid_to FROM records")
            done.append("rebuilt the scope table")
        return done


# Each user's document frequency of each term, counted from the rows (what the triggers
# of pg_migrations/003 keep in lm_term_stats).
TERM_RECOUNT = ("SELECT r.user_id, t.term, count(*) AS df FROM lm_records r "
                "CROSS JOIN LATERAL jsonb_object_keys(r.tf) AS t(term) GROUP BY r.user_id, t.term")


class PostgresIntegrity:
    """``integrity``/``repair`` for PostgresStore."""

    _NAMES = {"edges": "lm_edges", "records": "lm_records", "archive": "lm_archive"}
    _STATS = ("SELECT count(*) FROM (SELECT user_id, count(*) FILTER (WHERE doc_len > 0) AS docs, "
              "coalesce(sum(doc_len), 0) AS terms FROM lm_records GROUP BY user_id) r "
              "FULL JOIN lm_user_stats s USING (user_id) "
              "WHERE coalesce(r.docs, 0) <> coalesce(s.docs, 0) "
              "OR coalesce(r.terms, 0) <> coalesce(s.terms, 0)")
    _TERMS = ("SELECT count(DISTINCT coalesce(r.user_id, s.user_id)) FROM (" + TERM_RECOUNT +
              ") r FULL JOIN lm_term_stats s USING (user_id, term) "
              "WHERE coalesce(r.df, 0) <> coalesce(s.df, 0)")

    def integrity(self: Any) -> list[str]:
        problems = _dangling(self, self._NAMES)
        mentions = int(self._fetch("SELECT count(*) FROM lm_entity_mentions m WHERE NOT EXISTS "
                                   "(SELECT 1 FROM lm_records r WHERE r.user_id = m.user_id "
                                   "AND r.rowid = m.rowid)")[0][0])
        if mentions:
            problems.append(f"orphans: {mentions} entity mentions of memories that are gone")
        stats = max(int(self._fetch(self._STATS)[0][0]), int(self._fetch(self._TERMS)[0][0]))
        if stats:
            problems.append(f"full-text: the BM25 statistics of {stats} users disagree with "
                            "their memories")
        return problems + _vector_problems(self)

    def repair(self: Any) -> list[str]:
        done = []
        self.rebuild_text_index()
        with self.transaction() as conn:
            for end in ("src", "dst"):
                gone = conn.execute(_DELETE_DANGLING_EDGES.format(end=end, **self._NAMES)).rowcount
                if gone:
                    done.append(f"removed {gone} edges whose {end} was no memory")
            gone = conn.execute("DELETE FROM lm_entity_mentions m WHERE NOT EXISTS (SELECT 1 FROM "
                                "lm_records r WHERE r.user_id = m.user_id AND r.rowid = m.rowid)"
                                ).rowcount
            if gone:
                done.append(f"removed {gone} entity mentions of memories that are gone")
            conn.execute("DELETE FROM lm_user_stats")
            conn.execute("INSERT INTO lm_user_stats(user_id, docs, terms) SELECT user_id, "
                         "count(*) FILTER (WHERE doc_len > 0), coalesce(sum(doc_len), 0) "
                         "FROM lm_records GROUP BY user_id")
            conn.execute("DELETE FROM lm_term_stats")
            conn.execute("INSERT INTO lm_term_stats(user_id, term, df) " + TERM_RECOUNT)
        return done + ["recounted the BM25 statistics", "rebuilt the full-text terms"]
