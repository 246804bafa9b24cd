-- latentmem on PostgreSQL + pgvector: the first schema.
-- Every table that holds a user's data carries user_id, and it leads every primary key,
-- so the schema can be distributed by user_id (Citus: docs/scale-out.md). Store-wide
-- rows (meta, models and events of no user) use user_id = ''.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE SEQUENCE lm_rowid;
CREATE SEQUENCE lm_epoch;

CREATE TABLE lm_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE lm_records (
    user_id text NOT NULL,
    rowid bigint NOT NULL DEFAULT nextval('lm_rowid'),
    id text NOT NULL,
    agent_id text,
    session_id text,
    level text NOT NULL DEFAULT 'turn',
    parent_id text,
    text text,
    index_text text NOT NULL DEFAULT '',
    title text NOT NULL DEFAULT '',
    type text NOT NULL DEFAULT 'note',
    summary text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    role text,
    speaker text,
    event_time double precision,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    valid_to double precision,
    superseded_by text,
    importance double precision NOT NULL DEFAULT 0.5,
    access_count integer NOT NULL DEFAULT 0,
    last_accessed_at double precision,
    strength double precision NOT NULL DEFAULT 1.0,
    sources jsonb NOT NULL DEFAULT '[]',
    content_hash text NOT NULL DEFAULT '',
    -- Typed vector(dim) or halfvec(dim) once the store's embedder is bound (with its HNSW
    -- index): the dimension is not known before.
    vector vector NOT NULL,
    -- BM25: each term of index_text (cut as SQLite's FTS5 cuts it) with its count, and
    -- the number of terms (store/lexicon.py).
    tf jsonb NOT NULL DEFAULT '{}',
    doc_len integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, rowid),
    UNIQUE (user_id, id)
);
CREATE INDEX lm_records_id ON lm_records (id);
CREATE INDEX lm_records_rowid ON lm_records (rowid);
CREATE INDEX lm_records_user_time ON lm_records (user_id, event_time);
CREATE INDEX lm_records_user_session ON lm_records (user_id, session_id);
CREATE INDEX lm_records_user_speaker ON lm_records (user_id, speaker);
CREATE INDEX lm_records_tf ON lm_records USING gin (tf);

-- Per user: documents and terms, what BM25's idf and length normalisation read. Kept
-- by a trigger, in the writing transaction.
CREATE TABLE lm_user_stats (
    user_id text PRIMARY KEY,
    docs bigint NOT NULL DEFAULT 0,
    terms bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION lm_user_stats_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') AND OLD.doc_len > 0 THEN
        UPDATE lm_user_stats SET docs = docs - 1, terms = terms - OLD.doc_len
        WHERE user_id = OLD.user_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.doc_len > 0 THEN
        INSERT INTO lm_user_stats (user_id, docs, terms) VALUES (NEW.user_id, 1, NEW.doc_len)
        ON CONFLICT (user_id) DO UPDATE
        SET docs = lm_user_stats.docs + 1, terms = lm_user_stats.terms + NEW.doc_len;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lm_records_stats AFTER INSERT OR DELETE OR UPDATE OF doc_len ON lm_records
    FOR EACH ROW EXECUTE FUNCTION lm_user_stats_keep();

CREATE TABLE lm_entity_mentions (
    user_id text NOT NULL,
    entity text NOT NULL,
    rowid bigint NOT NULL,
    PRIMARY KEY (user_id, entity, rowid)
);
CREATE INDEX lm_entity_mentions_rowid ON lm_entity_mentions (user_id, rowid);

CREATE TABLE lm_edges (
    user_id text NOT NULL,
    src text NOT NULL,
    dst text NOT NULL,
    type text NOT NULL,
    weight double precision NOT NULL DEFAULT 1.0,
    created_at double precision NOT NULL,
    PRIMARY KEY (user_id, src, dst, type)
);
CREATE INDEX lm_edges_dst ON lm_edges (user_id, dst, type);
CREATE INDEX lm_edges_src_any ON lm_edges (src);
CREATE INDEX lm_edges_dst_any ON lm_edges (dst);

CREATE TABLE lm_history (
    user_id text NOT NULL,
    seq bigserial NOT NULL,
    record_id text NOT NULL,
    event text NOT NULL,
    old_text text,
    new_text text,
    at double precision NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX lm_history_record ON lm_history (record_id, seq);

CREATE TABLE lm_events (
    user_id text NOT NULL DEFAULT '',
    seq bigserial NOT NULL,
    at double precision NOT NULL,
    cycle text,
    action text NOT NULL,
    record_id text,
    reason text NOT NULL,
    undo jsonb,
    undone_at double precision,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX lm_events_seq ON lm_events (seq);
CREATE INDEX lm_events_record ON lm_events (record_id, seq);
CREATE INDEX lm_events_cycle ON lm_events (cycle, seq);

CREATE TABLE lm_feedback (
    user_id text NOT NULL,
    seq bigserial NOT NULL,
    record_id text NOT NULL,
    useful boolean NOT NULL,
    source text NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX lm_feedback_record ON lm_feedback (record_id);

CREATE TABLE lm_models (
    user_id text NOT NULL DEFAULT '',
    name text NOT NULL,
    state text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE lm_archive (
    user_id text NOT NULL,
    id text NOT NULL,
    row jsonb NOT NULL,
    index_text text NOT NULL,
    vector real[] NOT NULL,
    archived_at double precision NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX lm_archive_id ON lm_archive (id);

CREATE TABLE lm_accesses (
    user_id text NOT NULL,
    seq bigserial NOT NULL,
    at double precision NOT NULL,
    rowids jsonb NOT NULL,
    PRIMARY KEY (user_id, seq)
);

CREATE TABLE lm_embed_cache (
    key bytea PRIMARY KEY,
    vector bytea NOT NULL
);
