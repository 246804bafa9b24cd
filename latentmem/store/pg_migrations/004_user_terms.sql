-- 004: BM25's posting lists per user. Until now the GIN index on tf held one posting
-- list per term for the whole table, so a search for one user walked the rows of every
-- user that holds the query's terms and kept its own: on a shard of many users a common
-- term's list is many times the user's. This index keys each entry by user and term
-- ("user_id" || E'\x1f' || term), so a search reads the lists of its own user only.
--
-- Rejected: btree_gin on (user_id, tf): a multicolumn GIN keeps a list per column value
-- and intersects them, so it still reads the term's list across users. A postings table
-- keyed (user_id, term, rowid): per user too, but another table kept by triggers and
-- written on every add; the expression index is kept by PostgreSQL itself.
--
-- A user id that holds E'\x1f' could share a key with another user's term; the search
-- also filters on user_id, so that only costs the rows read, never a wrong result.

CREATE FUNCTION lm_user_terms(owner text, terms jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT coalesce(array_agg(owner || E'\x1f' || t), '{}') FROM jsonb_object_keys(terms) AS t $$;

CREATE INDEX lm_records_user_terms ON lm_records USING gin (lm_user_terms(user_id, tf));
DROP INDEX lm_records_tf;
