-- The rebuild queue takes marks without waiting on anyone.
--
-- With a unique key per shop, a mark waited for any other transaction that had inserted a mark
-- for the same shop and not yet committed: a merchant's edit waited for a 10,000-row delivery
-- batch or a 100,000-inspection feed page to commit (writes p99 of 4 to 7 s in the city mix at
-- 30,000 and 1,000,000 shops), and two such large transactions could wait on each other in a
-- circle across their statements (the 1M run's feed pull was undone by PostgreSQL twice, even
-- with marks taken in shop order, 0035). Now a shop may be queued more than once: a mark is
-- skipped only when the shop is already queued as far as the marking statement can see (a plain
-- read, which never waits), and the drain takes every row of the shops it claims.

ALTER TABLE profile_dirty DROP CONSTRAINT profile_dirty_pkey;
CREATE INDEX profile_dirty_shop_idx ON profile_dirty (shop_id);

CREATE OR REPLACE FUNCTION profile_dirty_by_shop_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT c.shop_id FROM changed_rows c
    WHERE c.shop_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = c.shop_id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT c.id FROM changed_rows c
    WHERE NOT EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = c.id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_inspection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT i.shop_id FROM changed_rows c JOIN inspection i ON i.id = c.inspection_id
    WHERE NOT EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = i.shop_id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_code() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT s.id FROM changed_rows c JOIN shop s ON s.code = c.code
    WHERE NOT EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = s.id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_inbox_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT c.shop_id FROM changed_rows c
    WHERE c.channel = 'inbox' AND NOT EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = c.shop_id);
    RETURN NULL;
END
$$;
