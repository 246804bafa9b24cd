-- 005: what the lifecycle (latentmem/lifecycle/) needs.
-- Every action a sleep cycle, the controller or a user command takes on a memory is an
-- event: what was done, to which memory, why, and (as JSON) how to undo it. `undo` is NULL
-- for what cannot be undone (deliberate deletions: their text is gone by design).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    cycle TEXT,
    action TEXT NOT NULL,
    record_id TEXT,
    user_id TEXT,
    reason TEXT NOT NULL,
    undo TEXT,
    undone_at REAL
);
CREATE INDEX events_record ON events(record_id, seq);
CREATE INDEX events_cycle ON events(cycle, seq);

-- Feedback on memories: explicit (m.feedback) or implicit (packed into a context).
CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    useful INTEGER NOT NULL,
    source TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX feedback_record ON feedback(record_id);

-- Small learned models persisted with the store (the importance controller).
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- Archived memories: out of every index, kept whole (vector included) so that an undo
-- can put them back. A forgotten-for-good memory is deleted instead.
CREATE TABLE archive (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    row TEXT NOT NULL,
    index_text TEXT NOT NULL,
    vector BLOB NOT NULL,
    archived_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX archive_user ON archive(user_id);

-- What each tracked search returned (rowids as JSON), newest last: preloading predicts
-- the next searches' memories from it, and measures its own hit rate against it. Sleep
-- cycles keep only the most recent rows.
CREATE TABLE accesses (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    user_id TEXT NOT NULL,
    rowids TEXT NOT NULL
);
CREATE INDEX accesses_user ON accesses(user_id, seq);
