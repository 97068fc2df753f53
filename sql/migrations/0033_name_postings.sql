-- Search whose cost does not grow with the number of matches (issue 17). The GIN index of
-- name_bigrams (0020) answers "which shops hold this fragment" as a bitmap of every match: for a
-- common fragment (咖啡, 超市) tens of thousands of heap rows fetched and sorted for a page of 20.
-- Postings instead: one narrow row per shop and distinct lowercased fragment of its names, in a
-- btree ordered as a page is (fragment, tier, code), carrying what the filters need, so that a
-- page walks about a page of index entries whatever the fragment.
--
-- Fragments: every two characters of the Chinese name and of name_en (lowercased), and the first
-- character of each (so that a one-character query finds the names that start with it).
-- tier: 0 the name is the fragment, 1 it starts with it, 2 it holds it elsewhere (the lowest over
-- both names): the ranking a citizen expects, exact name first.

-- what a shop's names put into the postings; inlined by the planner (plain SQL, no STRICT)
CREATE FUNCTION shop_name_grams(name text, name_en text) RETURNS TABLE (gram text, tier smallint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT f.gram, min(f.tier)::smallint
    FROM (
        SELECT substr(n.t, i, 2) AS gram,
               CASE WHEN i > 1 THEN 2 WHEN length(n.t) = 2 THEN 0 ELSE 1 END AS tier
        FROM unnest(ARRAY[lower(name), lower(name_en)]) AS n(t), generate_series(1, length(n.t) - 1) AS i
        UNION ALL
        SELECT left(n.t, 1), CASE WHEN length(n.t) = 1 THEN 0 ELSE 1 END
        FROM unnest(ARRAY[lower(name), lower(name_en)]) AS n(t)
        WHERE n.t <> ''
    ) AS f
    GROUP BY f.gram
$$;

-- How a name answers a query (already lowercased): 0 exact, 1 prefix, 2 holds it, NULL not at all.
-- strpos and starts_with, not LIKE: a query's % and _ are characters like any other.
CREATE FUNCTION name_rank(name text, q text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lower(name) = q THEN 0
                WHEN starts_with(lower(name), q) THEN 1
                WHEN strpos(lower(name), q) > 0 THEN 2 END::smallint
$$;

-- No primary key and no second index: rows are found by (gram, tier, code), which a shop's old
-- names give back exactly when it changes.
CREATE TABLE shop_name_gram (
    gram    text     NOT NULL,
    tier    smallint NOT NULL,
    code    text     NOT NULL,
    trade   text     NOT NULL,
    area_id bigint   NOT NULL,
    closed  boolean  NOT NULL
);
ALTER TABLE shop_name_gram ALTER COLUMN gram SET STATISTICS 1000;

SET LOCAL maintenance_work_mem = '256MB';
SET LOCAL work_mem = '64MB';
INSERT INTO shop_name_gram (gram, tier, code, trade, area_id, closed)
SELECT g.gram, g.tier, s.code, s.trade, s.area_id, s.status = 'closed'
FROM shop s, shop_name_grams(s.name, s.name_en) AS g;

-- the filters ride along in the index so that a walk skips what they refuse without the heap
CREATE INDEX shop_name_gram_walk_idx ON shop_name_gram (gram, tier, code) INCLUDE (trade, area_id, closed);
ANALYZE shop_name_gram;

-- Kept in step statement by statement (a COPY of a whole district fires it once).
CREATE FUNCTION shop_name_gram_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM shop_name_gram n
    USING old_rows o, shop_name_grams(o.name, o.name_en) AS g
    WHERE n.gram = g.gram AND n.tier = g.tier AND n.code = o.code;
    RETURN NULL;
END
$$;

CREATE FUNCTION shop_name_gram_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop_name_gram (gram, tier, code, trade, area_id, closed)
    SELECT g.gram, g.tier, s.code, s.trade, s.area_id, s.status = 'closed'
    FROM new_rows s, shop_name_grams(s.name, s.name_en) AS g;
    RETURN NULL;
END
$$;

-- an UPDATE trigger with transition tables cannot name columns: it compares them itself, so
-- that the many updates of other columns (updated_at, claims, hours) cost one join
CREATE FUNCTION shop_name_gram_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM shop_name_gram n
    USING old_rows o JOIN new_rows s ON s.id = o.id, shop_name_grams(o.name, o.name_en) AS g
    WHERE (o.name, o.name_en, o.code, o.trade, o.area_id, o.status = 'closed')
          IS DISTINCT FROM (s.name, s.name_en, s.code, s.trade, s.area_id, s.status = 'closed')
      AND n.gram = g.gram AND n.tier = g.tier AND n.code = o.code;
    INSERT INTO shop_name_gram (gram, tier, code, trade, area_id, closed)
    SELECT g.gram, g.tier, s.code, s.trade, s.area_id, s.status = 'closed'
    FROM old_rows o JOIN new_rows s ON s.id = o.id, shop_name_grams(s.name, s.name_en) AS g
    WHERE (o.name, o.name_en, o.code, o.trade, o.area_id, o.status = 'closed')
          IS DISTINCT FROM (s.name, s.name_en, s.code, s.trade, s.area_id, s.status = 'closed');
    RETURN NULL;
END
$$;

CREATE TRIGGER shop_name_gram_ins AFTER INSERT ON shop REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shop_name_gram_insert();
CREATE TRIGGER shop_name_gram_upd AFTER UPDATE ON shop REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shop_name_gram_update();
CREATE TRIGGER shop_name_gram_del AFTER DELETE ON shop REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shop_name_gram_delete();

-- The rarest fragment of a query and how many postings it has, counted no further than `cap`
-- (each count is stopped at the best one so far): a longer query walks the postings of that one.
CREATE FUNCTION rarest_name_gram(q text, cap int, OUT gram text, OUT n int) LANGUAGE plpgsql STABLE AS $$
DECLARE
    g text;
    c int;
BEGIN
    n := cap + 1;
    FOREACH g IN ARRAY (CASE WHEN length(q) = 1 THEN ARRAY[lower(q)] ELSE name_bigrams(q) END) LOOP
        SELECT count(*) INTO c FROM (SELECT 1 FROM shop_name_gram x WHERE x.gram = g LIMIT n) AS s;
        IF c < n THEN
            gram := g;
            n := c;
        END IF;
        EXIT WHEN n = 0;
    END LOOP;
END
$$;
