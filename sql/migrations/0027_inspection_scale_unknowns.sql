-- LIVES' multi-file form has no result column and many feeds no `critical` column: what a
-- publisher does not say is stored as unknown (NULL), never as "pass" or "not critical".
ALTER TABLE inspection ALTER COLUMN result DROP NOT NULL;
ALTER TABLE violation ALTER COLUMN critical DROP NOT NULL, ALTER COLUMN critical DROP DEFAULT;

-- A score means nothing without its scale: LIVES 0-100 is higher-is-better, FHRS points and
-- demerit points lower-is-better. Patrol inspections (and the demo's rows) are 0-100.
ALTER TABLE inspection ADD COLUMN score_scale text DEFAULT 'lives_0_100'
    CHECK (score_scale IN ('lives_0_100', 'fhrs_points', 'demerit_points'));
UPDATE inspection i SET score_scale = 'fhrs_points'
FROM feed_source f WHERE f.kind = 'fhrs' AND f.name = i.source;
UPDATE inspection SET score_scale = NULL WHERE score IS NULL;

-- What a publisher keeps stable when its ids are row counters: business, date, type, score and
-- the violations' codes, hashed. Looked up per source to notice ids that moved between pulls.
ALTER TABLE inspection ADD COLUMN content_key text;
CREATE INDEX inspection_content_key_idx ON inspection (source, content_key) WHERE content_key IS NOT NULL;

-- Set once a pull showed that the source's ids are not stable (or its config says so): from
-- then on its inspections are keyed by content.
ALTER TABLE feed_source ADD COLUMN unstable_ids boolean NOT NULL DEFAULT false;
