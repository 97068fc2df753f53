-- Profiles are marked for rebuild in shop order.
--
-- Two large statements marking many of the same shops (a feed page of 100,000 inspections, a
-- policy's 290,000 inbox deliveries, the licence reminders) inserted their queue rows in hash
-- order, each waiting on the other's uncommitted rows of the unique index: PostgreSQL found the
-- cycle and undid one of them (the city-mix bench at 1,000,000 shops lost its feed pull to it).
-- Taken in one order, two statements can wait on each other but never in a circle.

CREATE OR REPLACE FUNCTION profile_dirty_by_shop_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT shop_id FROM changed_rows WHERE shop_id IS NOT NULL ORDER BY shop_id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT id FROM changed_rows ORDER BY id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_inspection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT i.shop_id FROM changed_rows c JOIN inspection i ON i.id = c.inspection_id
    ORDER BY i.shop_id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_code() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT s.id FROM changed_rows c JOIN shop s ON s.code = c.code ORDER BY s.id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION profile_dirty_by_inbox_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT shop_id FROM changed_rows WHERE channel = 'inbox' ORDER BY shop_id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;
