-- 003: which memories mention which entity (names found without an LLM, see
-- latentmem/graph/entities.py). It backs `entity` edges (each mention links to the
-- previous mention of the same entity in the user's memories) and the entity hop of
-- retrieval. Memories stored before this migration have no mentions.
CREATE TABLE entity_mentions (
    user_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    rowid_ INTEGER NOT NULL,
    PRIMARY KEY (user_id, entity, rowid_)
) WITHOUT ROWID;
CREATE INDEX entity_mentions_rowid ON entity_mentions(rowid_);
