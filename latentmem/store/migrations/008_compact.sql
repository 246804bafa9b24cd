-- 008: compressed texts and storage profiles (latentmem/store/textcodec.py, profiles.py).
-- A memory's text may now be a BLOB: zstd with a dictionary trained on the store's texts,
-- read back by latentmem_text(), a function every connection of the store registers. The
-- full-text index's content and its triggers read through it.

-- The dictionaries texts are compressed with; a text's first byte names its generation.
CREATE TABLE text_dicts (
    generation INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    trained_on INTEGER NOT NULL
);

DROP VIEW records_indexed;
CREATE VIEW records_indexed(rowid, index_text) AS
    SELECT rowid, coalesce(index_text, CASE WHEN speaker IS NOT NULL AND speaker <> ''
                                       THEN speaker || ': ' || coalesce(latentmem_text(text), '')
                                       ELSE coalesce(latentmem_text(text), '') END)
    FROM records;

DROP TRIGGER records_fts_insert;
CREATE TRIGGER records_fts_insert AFTER INSERT ON records BEGIN
    INSERT INTO records_fts(rowid, index_text) VALUES (new.rowid,
        coalesce(new.index_text, CASE WHEN new.speaker IS NOT NULL AND new.speaker <> ''
                                 THEN new.speaker || ': ' || coalesce(latentmem_text(new.text), '')
                                 ELSE coalesce(latentmem_text(new.text), '') END));
END;
DROP TRIGGER records_fts_delete;
CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, index_text)
    SELECT 'delete', old.rowid,
        coalesce(old.index_text, CASE WHEN old.speaker IS NOT NULL AND old.speaker <> ''
                                 THEN old.speaker || ': ' || coalesce(latentmem_text(old.text), '')
                                 ELSE coalesce(latentmem_text(old.text), '') END)
    WHERE EXISTS (SELECT 1 FROM records_fts_docsize WHERE id = old.rowid);
END;
-- Re-encoding a text with a new dictionary changes its bytes, not its words: the index is
-- left alone then.
DROP TRIGGER records_fts_update;
CREATE TRIGGER records_fts_update AFTER UPDATE OF text, speaker, index_text ON records
WHEN old.index_text IS NOT new.index_text OR old.speaker IS NOT new.speaker
    OR latentmem_text(old.text) IS NOT latentmem_text(new.text)
BEGIN
    INSERT INTO records_fts(records_fts, rowid, index_text)
    SELECT 'delete', old.rowid,
        coalesce(old.index_text, CASE WHEN old.speaker IS NOT NULL AND old.speaker <> ''
                                 THEN old.speaker || ': ' || coalesce(latentmem_text(old.text), '')
                                 ELSE coalesce(latentmem_text(old.text), '') END)
    WHERE EXISTS (SELECT 1 FROM records_fts_docsize WHERE id = old.rowid);
    INSERT INTO records_fts(rowid, index_text) VALUES (new.rowid,
        coalesce(new.index_text, CASE WHEN new.speaker IS NOT NULL AND new.speaker <> ''
                                 THEN new.speaker || ': ' || coalesce(latentmem_text(new.text), '')
                                 ELSE coalesce(latentmem_text(new.text), '') END));
END;

-- A content hash is stored as '' when it is the hash of the text, and a title when it is
-- the one derived from the text (SQLiteStore derives both on read; a memory without text
-- has neither). An ADD event is no longer written: SQLiteStore.history
-- gives it from the record's created_at, and a deletion writes it before its DELETE.
UPDATE records SET content_hash = ''
WHERE text IS NOT NULL AND content_hash <> '' AND content_hash = latentmem_hash(text);
UPDATE records SET title = ''
WHERE text IS NOT NULL AND title <> '' AND title = latentmem_title(text);

-- A `next` edge (one turn to the one after it) costs ~150 bytes as an edges row plus its
-- index, about a tenth of a memory. A memory now names the memory before it by rowid
-- (rowids are never given twice: SQLiteStore._next_rowid); the edge's weight is 1 and its
-- time the later memory's creation, as the write path makes them. Other edges, and next
-- edges that do not fit that form, stay in edges; edge_list reads both.
ALTER TABLE records ADD COLUMN prev INTEGER;
CREATE INDEX records_prev ON records(prev) WHERE prev IS NOT NULL;
UPDATE records SET prev = (
    SELECT p.rowid FROM edges e JOIN records p ON p.id = e.src
    WHERE e.dst = records.id AND e.type = 'next' AND e.weight = 1.0
      AND e.created_at = records.created_at
    ORDER BY p.rowid LIMIT 1)
WHERE EXISTS (SELECT 1 FROM edges e WHERE e.dst = records.id AND e.type = 'next');
DELETE FROM edges WHERE type = 'next' AND EXISTS (
    SELECT 1 FROM records r JOIN records p ON p.rowid = r.prev
    WHERE r.id = edges.dst AND p.id = edges.src);
CREATE VIEW edge_list(src, dst, type, weight, created_at) AS
    SELECT src, dst, type, weight, created_at FROM edges
    UNION
    SELECT p.id, r.id, 'next', 1.0, r.created_at FROM records r JOIN records p ON p.rowid = r.prev
    WHERE r.prev IS NOT NULL;

-- The embedding cache as a rowid table: a WITHOUT ROWID row keeps at most ~1 KB in its page,
-- so every float32 vector (1.5 KB at 384-d) took an overflow page of its own: 4.6 KB an
-- entry, against 1.6 KB now.
CREATE TABLE embed_cache_rows (key BLOB NOT NULL UNIQUE, vector BLOB NOT NULL);
INSERT INTO embed_cache_rows(key, vector) SELECT key, vector FROM embed_cache;
DROP TABLE embed_cache;
ALTER TABLE embed_cache_rows RENAME TO embed_cache;
