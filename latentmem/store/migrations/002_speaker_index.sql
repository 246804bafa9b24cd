-- 002: find the speakers of a scope quickly (query entity matching in retrieval).
CREATE INDEX records_user_speaker ON records(user_id, speaker);
