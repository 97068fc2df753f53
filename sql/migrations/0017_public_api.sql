-- The public API (merchant_code/routes/public.py): shop search by name and by distance, and a
-- change feed of profiles.

-- name search: trigram index (ILIKE '%...%' of three characters or more; CJK names included)
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX shop_name_trgm_idx ON shop USING gin (name gin_trgm_ops);
-- nearest shops first: a KNN index on the point (lon, lat); exact distances are computed after
CREATE INDEX shop_point_idx ON shop USING gist (point(lon, lat)) WHERE lat IS NOT NULL AND lon IS NOT NULL;

-- every profile write takes the next number: "what changed since N" is one index range
CREATE SEQUENCE profile_change_seq;
ALTER TABLE shop_profile ADD COLUMN change_seq bigint;
UPDATE shop_profile SET change_seq = nextval('profile_change_seq');
ALTER TABLE shop_profile ALTER COLUMN change_seq SET DEFAULT nextval('profile_change_seq');
ALTER TABLE shop_profile ALTER COLUMN change_seq SET NOT NULL;
CREATE UNIQUE INDEX shop_profile_change_idx ON shop_profile (change_seq);
