-- 1. Only inbox deliveries are part of a shop's profile (its notices): channel rows being leased,
--    retried and settled no longer mark the profile for rebuild.
-- 2. Open311 lists requests publicly, so a request's public id is not the reporter's tracking
--    number (which stays the reporter's proof, e.g. to reopen).

CREATE FUNCTION profile_dirty_by_inbox_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT shop_id FROM changed_rows WHERE channel = 'inbox'
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;
DROP TRIGGER delivery_dirty_ins ON delivery;
DROP TRIGGER delivery_dirty_upd ON delivery;
DROP TRIGGER delivery_dirty_del ON delivery;
CREATE TRIGGER delivery_dirty_ins AFTER INSERT ON delivery REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION profile_dirty_by_inbox_delivery();
CREATE TRIGGER delivery_dirty_upd AFTER UPDATE ON delivery REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION profile_dirty_by_inbox_delivery();
CREATE TRIGGER delivery_dirty_del AFTER DELETE ON delivery REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION profile_dirty_by_inbox_delivery();

CREATE FUNCTION new_request_id() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'SR-' || upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 12))
$$;
ALTER TABLE case_file ADD COLUMN request_id text NOT NULL UNIQUE DEFAULT new_request_id();
ALTER TABLE case_report ADD COLUMN request_id text NOT NULL UNIQUE DEFAULT new_request_id();
