-- 001: records, vectors, full-text index, edges, history, embedding cache.
CREATE TABLE records (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    level TEXT NOT NULL DEFAULT 'turn',
    parent_id TEXT,
    text TEXT,
    index_text TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT 'note',
    summary TEXT NOT NULL DEFAULT '',
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
CREATE INDEX records_user_time ON records(user_id, event_time);
CREATE INDEX records_user_session ON records(user_id, session_id);
CREATE INDEX records_user_agent ON records(user_id, agent_id);

-- BM25 over the indexed text (speaker-prefixed turn text). rowid = records.rowid.
CREATE VIRTUAL TABLE records_fts USING fts5(index_text, tokenize = 'porter unicode61');

CREATE TABLE edges (
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    type TEXT NOT NULL,
    weight REAL NOT NULL DEFAULT 1.0,
    created_at REAL NOT NULL,
    PRIMARY KEY (src, dst, type)
) WITHOUT ROWID;
CREATE INDEX edges_dst ON edges(dst, type);

CREATE TABLE history (
    seq INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    event TEXT NOT NULL,
    old_text TEXT,
    new_text TEXT,
    at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX history_record ON history(record_id, seq);

CREATE TABLE embed_cache (
    key BLOB PRIMARY KEY,
    vector BLOB NOT NULL
) WITHOUT ROWID;

-- Store-wide facts: the embedder the vectors come from, and a counter bumped by
-- every transaction that changes vectors (the FAISS file records which value it saw).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('vector_epoch', '0');
