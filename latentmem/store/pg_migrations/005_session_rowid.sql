-- 005: a session's newest rows through an index. An add reads the newest turn of its
-- session (for the "next" edge) and the controller that session's last vectors, both
-- ORDER BY rowid DESC LIMIT. With only (user_id, session_id) indexed, PostgreSQL walked
-- the table's rowid index backwards from its newest row until it met one of the session,
-- so for a session with no rows yet it walked all of them: a single add took 560 ms at
-- 1M memories and 68 ms at 100k (bench perf, 2026-12-03), growing with the store. With
-- rowid in the key, both reads start at the session's newest row.
CREATE INDEX lm_records_user_session_rowid ON lm_records (user_id, session_id, rowid);
DROP INDEX lm_records_user_session;
