-- 004: a narrow copy of the columns every read path filters on. Full-text search must
-- check each matching row's scope; reading it from `records` (rows of ~3 KB, vector
-- included) costs a page per match, while these ~40-byte rows stay in the page cache.
-- At 100k memories that took a BM25 query from ~30 to ~12 ms. Triggers keep it exact.
CREATE TABLE record_scope (
    rowid INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    event_time REAL,
    valid_to REAL
);
INSERT INTO record_scope(rowid, user_id, agent_id, session_id, event_time, valid_to)
    SELECT rowid, user_id, agent_id, session_id, event_time, valid_to FROM records;

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
