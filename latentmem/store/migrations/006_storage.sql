-- 006: vector storage tiers and a slimmer layout (latentmem/store/codec.py).
-- LoCoMo conv-26 (419 turns) took 5.2 KB of SQLite per memory before this: the text was
-- kept four times (text, index_text, the full-text table's own copy, history's ADD row)
-- and summary and title are mostly the text again. Now each is kept once.

-- The PQ codebook of a store whose vector_tier is 'pq' (fp16 centroids), written once.
CREATE TABLE vector_codebook (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL
);

-- records again, with index_text and summary nullable. NULL means "derived from the text":
-- index_text is "speaker: text" (the SQL below), summary the text with its whitespace
-- collapsed (what segment.derive_summary gives a short memory). Only other values are stored.
CREATE TABLE records_slim (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    level TEXT NOT NULL DEFAULT 'turn',
    parent_id TEXT,
    text TEXT,
    index_text TEXT,
    title TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT 'note',
    summary TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    role TEXT,
    speaker TEXT,
    event_time REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    valid_to REAL,
    superseded_by TEXT,
    importance REAL NOT NULL DEFAULT 0.5,
    access_count INTEGER NOT NULL DEFAULT 0,
    last_accessed_at REAL,
    strength REAL NOT NULL DEFAULT 1.0,
    sources TEXT NOT NULL DEFAULT '[]',
    content_hash TEXT NOT NULL DEFAULT '',
    vector BLOB NOT NULL
);
INSERT INTO records_slim
    SELECT rowid, id, user_id, agent_id, session_id, level, parent_id, text,
        CASE WHEN index_text IS (CASE WHEN speaker IS NOT NULL AND speaker <> ''
                                 THEN speaker || ': ' || coalesce(text, '')
                                 ELSE coalesce(text, '') END)
             THEN NULL ELSE index_text END,
        title, type, summary, metadata, role, speaker, event_time, created_at, updated_at,
        valid_to, superseded_by, importance, access_count, last_accessed_at, strength, sources,
        content_hash, vector
    FROM records;
DROP TABLE records_fts;
DROP TABLE records;
ALTER TABLE records_slim RENAME TO records;
CREATE INDEX records_user_time ON records(user_id, event_time);
CREATE INDEX records_user_session ON records(user_id, session_id);
-- Most memories have no agent: the agent index holds only those that do (a search by agent
-- says agent_id = ?, which the planner knows implies NOT NULL).
CREATE INDEX records_user_agent ON records(user_id, agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX records_user_speaker ON records(user_id, speaker);

-- record_scope's triggers (004) went with the old table.
CREATE TRIGGER record_scope_insert AFTER INSERT ON records BEGIN
    INSERT INTO record_scope(rowid, user_id, agent_id, session_id, event_time, valid_to)
    VALUES (new.rowid, new.user_id, new.agent_id, new.session_id, new.event_time, new.valid_to);
END;
CREATE TRIGGER record_scope_delete AFTER DELETE ON records BEGIN
    DELETE FROM record_scope WHERE rowid = old.rowid;
END;
CREATE TRIGGER record_scope_update
AFTER UPDATE OF user_id, agent_id, session_id, event_time, valid_to ON records BEGIN
    UPDATE record_scope SET user_id = new.user_id, agent_id = new.agent_id,
        session_id = new.session_id, event_time = new.event_time, valid_to = new.valid_to
    WHERE rowid = new.rowid;
END;

-- Full text over an external content: the index reads the words from records through this
-- view instead of keeping its own copy. Triggers keep it exact, whoever writes records.
-- A row a caller already took out of the index (records_fts_docsize has no row for it) is
-- not deleted twice: FTS5 would count it out of its totals again.
CREATE VIEW records_indexed(rowid, index_text) AS
    SELECT rowid, coalesce(index_text, CASE WHEN speaker IS NOT NULL AND speaker <> ''
                                       THEN speaker || ': ' || coalesce(text, '')
                                       ELSE coalesce(text, '') END)
    FROM records;
CREATE VIRTUAL TABLE records_fts USING fts5(
    index_text, content = 'records_indexed', content_rowid = 'rowid',
    tokenize = 'porter unicode61'
);
INSERT INTO records_fts(records_fts) VALUES ('rebuild');
CREATE TRIGGER records_fts_insert AFTER INSERT ON records BEGIN
    INSERT INTO records_fts(rowid, index_text) VALUES (new.rowid,
        coalesce(new.index_text, CASE WHEN new.speaker IS NOT NULL AND new.speaker <> ''
                                 THEN new.speaker || ': ' || coalesce(new.text, '')
                                 ELSE coalesce(new.text, '') END));
END;
CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, index_text)
    SELECT 'delete', old.rowid,
        coalesce(old.index_text, CASE WHEN old.speaker IS NOT NULL AND old.speaker <> ''
                                 THEN old.speaker || ': ' || coalesce(old.text, '')
                                 ELSE coalesce(old.text, '') END)
    WHERE EXISTS (SELECT 1 FROM records_fts_docsize WHERE id = old.rowid);
END;
CREATE TRIGGER records_fts_update AFTER UPDATE OF text, speaker, index_text ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, index_text)
    SELECT 'delete', old.rowid,
        coalesce(old.index_text, CASE WHEN old.speaker IS NOT NULL AND old.speaker <> ''
                                 THEN old.speaker || ': ' || coalesce(old.text, '')
                                 ELSE coalesce(old.text, '') END)
    WHERE EXISTS (SELECT 1 FROM records_fts_docsize WHERE id = old.rowid);
    INSERT INTO records_fts(rowid, index_text) VALUES (new.rowid,
        coalesce(new.index_text, CASE WHEN new.speaker IS NOT NULL AND new.speaker <> ''
                                 THEN new.speaker || ': ' || coalesce(new.text, '')
                                 ELSE coalesce(new.text, '') END));
END;

-- Dropping a memory's text (demotion) drops everything derived from it: the caller sets
-- the summary (the inverter's reconstruction, or ''); nothing here copies the old text.

-- History: an ADD (or IMPORT) no longer repeats the text, and an UPDATE that left the text
-- as it was keeps none. SQLiteStore.history puts them back: the text after an event is the
-- next text-changing UPDATE's old text, else the memory's current text; none before a
-- DELETE or a DEMOTE, which scrub the texts they follow.
UPDATE history SET old_text = NULL, new_text = NULL
WHERE event = 'UPDATE' AND old_text IS NOT NULL AND old_text IS new_text
    AND new_text IS coalesce(
        (SELECT h.old_text FROM history h WHERE h.record_id = history.record_id
         AND h.seq > history.seq AND h.event = 'UPDATE' AND h.old_text IS NOT h.new_text
         ORDER BY h.seq LIMIT 1),
        (SELECT r.text FROM records r WHERE r.id = history.record_id))
    AND NOT EXISTS (SELECT 1 FROM history h WHERE h.record_id = history.record_id
                    AND h.seq > history.seq AND h.event IN ('DELETE', 'DEMOTE'));
UPDATE history SET new_text = NULL
WHERE event IN ('ADD', 'IMPORT', 'RESTORE') AND new_text IS NOT NULL
    AND new_text IS coalesce(
        (SELECT h.old_text FROM history h WHERE h.record_id = history.record_id
         AND h.seq > history.seq AND h.event = 'UPDATE' AND h.old_text IS NOT NULL
         AND h.new_text IS NOT NULL AND h.old_text IS NOT h.new_text
         ORDER BY h.seq LIMIT 1),
        (SELECT r.text FROM records r WHERE r.id = history.record_id))
    AND NOT EXISTS (SELECT 1 FROM history h WHERE h.record_id = history.record_id
                    AND h.seq > history.seq AND h.event IN ('DELETE', 'DEMOTE'));
