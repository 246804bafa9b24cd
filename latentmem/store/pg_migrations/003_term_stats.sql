-- 003: BM25's document frequencies as a table. Until now a search counted, for each
-- query term, the user's rows that hold it (a GIN scan over every matching row: most of
-- a user's rows for a common term). lm_term_stats keeps that count per (user, term), so
-- BM25 reads it as a lookup. user_id leads the key: it distributes with lm_records.
--
-- Kept by triggers, in the writing transaction, like lm_user_stats before it: every
-- path that inserts, deletes or re-terms a row (add, import, update, delete, archive,
-- text demotion and restore, repair, and any written later or by hand) keeps the
-- counts without knowing of them. Inserts and deletes are counted once per statement
-- from its transition table (a COPY of 10,000 rows is one upsert per distinct term, not
-- one per row and term); an UPDATE is counted per row, and only when the row's terms or
-- owner change (a statement-level UPDATE trigger cannot name columns, so it would fire
-- on every access-count and strength update).
--
-- Lock order: each trigger updates the user's lm_user_stats row before any of the
-- user's term rows, and holds it to commit, so two transactions writing one user's
-- terms take turns instead of deadlocking on term rows taken in different orders.

LOCK TABLE lm_records IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE lm_term_stats (
    user_id text NOT NULL,
    term text NOT NULL,
    df bigint NOT NULL,
    PRIMARY KEY (user_id, term)
);

DROP TRIGGER lm_records_stats ON lm_records;
DROP FUNCTION lm_user_stats_keep();

CREATE FUNCTION lm_text_stats_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lm_user_stats AS s (user_id, docs, terms)
    SELECT user_id, count(*), sum(doc_len) FROM lm_new WHERE doc_len > 0
    GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
    SET docs = s.docs + excluded.docs, terms = s.terms + excluded.terms;
    INSERT INTO lm_term_stats AS s (user_id, term, df)
    SELECT n.user_id, t.term, count(*) FROM lm_new n CROSS JOIN LATERAL jsonb_object_keys(n.tf) AS t(term)
    GROUP BY n.user_id, t.term ORDER BY n.user_id, t.term
    ON CONFLICT (user_id, term) DO UPDATE SET df = s.df + excluded.df;
    RETURN NULL;
END $$;

CREATE FUNCTION lm_text_stats_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lm_user_stats s SET docs = s.docs - o.docs, terms = s.terms - o.terms
    FROM (SELECT user_id, count(*) AS docs, sum(doc_len) AS terms FROM lm_old
          WHERE doc_len > 0 GROUP BY user_id) o
    WHERE s.user_id = o.user_id;
    UPDATE lm_term_stats s SET df = s.df - g.n
    FROM (SELECT o.user_id, t.term, count(*) AS n
          FROM lm_old o CROSS JOIN LATERAL jsonb_object_keys(o.tf) AS t(term)
          GROUP BY o.user_id, t.term) g
    WHERE s.user_id = g.user_id AND s.term = g.term;
    DELETE FROM lm_term_stats s
    USING (SELECT DISTINCT o.user_id, t.term
           FROM lm_old o CROSS JOIN LATERAL jsonb_object_keys(o.tf) AS t(term)) g
    WHERE s.user_id = g.user_id AND s.term = g.term AND s.df <= 0;
    RETURN NULL;
END $$;

CREATE FUNCTION lm_text_stats_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.doc_len > 0 THEN
        UPDATE lm_user_stats SET docs = docs - 1, terms = terms - OLD.doc_len
        WHERE user_id = OLD.user_id;
    END IF;
    IF NEW.doc_len > 0 THEN
        INSERT INTO lm_user_stats AS s (user_id, docs, terms) VALUES (NEW.user_id, 1, NEW.doc_len)
        ON CONFLICT (user_id) DO UPDATE SET docs = s.docs + 1, terms = s.terms + NEW.doc_len;
    END IF;
    INSERT INTO lm_term_stats AS s (user_id, term, df)
    SELECT d.user_id, d.term, sum(d.n) FROM (
        SELECT OLD.user_id, k, -1 FROM jsonb_object_keys(OLD.tf) AS k
        UNION ALL
        SELECT NEW.user_id, k, 1 FROM jsonb_object_keys(NEW.tf) AS k) AS d(user_id, term, n)
    GROUP BY d.user_id, d.term HAVING sum(d.n) <> 0 ORDER BY d.user_id, d.term
    ON CONFLICT (user_id, term) DO UPDATE SET df = s.df + excluded.df;
    DELETE FROM lm_term_stats
    WHERE user_id = OLD.user_id AND df <= 0 AND term IN (SELECT jsonb_object_keys(OLD.tf));
    RETURN NULL;
END $$;

CREATE TRIGGER lm_records_text_add AFTER INSERT ON lm_records
    REFERENCING NEW TABLE AS lm_new FOR EACH STATEMENT EXECUTE FUNCTION lm_text_stats_add();
CREATE TRIGGER lm_records_text_remove AFTER DELETE ON lm_records
    REFERENCING OLD TABLE AS lm_old FOR EACH STATEMENT EXECUTE FUNCTION lm_text_stats_remove();
CREATE TRIGGER lm_records_text_change AFTER UPDATE OF tf, doc_len, user_id ON lm_records
    FOR EACH ROW
    WHEN (OLD.tf IS DISTINCT FROM NEW.tf OR OLD.doc_len IS DISTINCT FROM NEW.doc_len
          OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION lm_text_stats_change();

-- Existing stores: count what is there (and recount the user statistics with it).
DELETE FROM lm_user_stats;
INSERT INTO lm_user_stats (user_id, docs, terms)
SELECT user_id, count(*) FILTER (WHERE doc_len > 0), coalesce(sum(doc_len), 0)
FROM lm_records GROUP BY user_id;
INSERT INTO lm_term_stats (user_id, term, df)
SELECT r.user_id, t.term, count(*)
FROM lm_records r CROSS JOIN LATERAL jsonb_object_keys(r.tf) AS t(term)
GROUP BY r.user_id, t.term;
