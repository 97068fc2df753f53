-- Quarantine keyed by (source, record key, reason) and counted: re-running an unchanged feed
-- appended every reject again (17 rejects became 34). A record key is the record's external id,
-- or, without one, the SHA-256 of its raw bytes as kept. The first run and time that saw a reject
-- stay in run_id and at; the last ones and how often it was seen are new. A reject whose record
-- later lands is marked resolved (kept as history) and no longer waits.

ALTER TABLE feed_reject
    ADD COLUMN record_key text,
    -- what the runner was storing when it refused the record (inspection, licence, review,
    -- sentiment, shop); NULL for what the source's parser refused
    ADD COLUMN kind text CHECK (kind IN ('inspection', 'licence', 'review', 'sentiment', 'shop')),
    ADD COLUMN seen_count integer NOT NULL DEFAULT 1 CHECK (seen_count >= 1),
    ADD COLUMN last_run_id bigint REFERENCES feed_run (id),
    ADD COLUMN last_seen_at timestamptz,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_run_id bigint REFERENCES feed_run (id);

-- The runner's own rejects (no shop matched) carry the record's id and name its kind by their
-- source's; a parser's carry at most a hint (LIVES names the business of a bad line) and are
-- keyed by their bytes, as the runner keys them from now on.
UPDATE feed_reject j SET kind = CASE
        WHEN j.reason = 'no shop in the register matches this business' THEN 'shop'
        ELSE (SELECT CASE s.kind WHEN 'lives' THEN 'inspection' WHEN 'fhrs' THEN 'inspection'
                                 WHEN 'licence_registry' THEN 'licence' WHEN 'review_platform' THEN 'review'
                                 ELSE 'sentiment' END
              FROM feed_source s WHERE s.id = j.source_id) END
WHERE j.external_id IS NOT NULL
  AND j.reason IN ('no shop in the register matches this business', 'no shop in the register matches this record');

-- the key's parts are bounded so that one index entry always fits (a btree entry is at most
-- 2704 bytes: 200 + 300 characters of four bytes each stay below it)
UPDATE feed_reject SET
    reason = left(reason, 300),
    record_key = CASE
        WHEN kind IS NOT NULL AND length(external_id) <= 200 THEN external_id
        WHEN kind IS NOT NULL THEN 'sha256:' || encode(sha256(convert_to(external_id, 'UTF8')), 'hex')
        ELSE 'sha256:' || encode(sha256(coalesce(raw_bytes, convert_to(coalesce(raw, ''), 'UTF8'))), 'hex')
    END;

-- duplicates merge into the first row of their key, which keeps the sum of the sightings
WITH ranked AS (
    SELECT id,
           first_value(id) OVER w AS keep,
           count(*) OVER w AS seen,
           max(run_id) OVER w AS last_run,
           max(at) OVER w AS last_at,
           last_value(coalesce(raw_bytes, convert_to(raw, 'UTF8'))) OVER w AS newest
    FROM feed_reject
    WINDOW w AS (PARTITION BY source_id, record_key, reason ORDER BY id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),
kept AS (
    UPDATE feed_reject j SET seen_count = r.seen, last_run_id = r.last_run, last_seen_at = r.last_at,
                             raw_bytes = coalesce(r.newest, j.raw_bytes)
    FROM ranked r WHERE j.id = r.id AND r.id = r.keep
)
DELETE FROM feed_reject j USING ranked r WHERE j.id = r.id AND r.id <> r.keep;

UPDATE feed_reject SET last_run_id = run_id, last_seen_at = at WHERE last_run_id IS NULL;

ALTER TABLE feed_reject
    ALTER COLUMN record_key SET NOT NULL,
    ALTER COLUMN last_run_id SET NOT NULL,
    ALTER COLUMN last_seen_at SET NOT NULL,
    ALTER COLUMN last_seen_at SET DEFAULT now(),
    ADD CONSTRAINT feed_reject_key_bounded CHECK (length(record_key) <= 200 AND length(reason) <= 300);

CREATE UNIQUE INDEX feed_reject_key_idx ON feed_reject (source_id, record_key, reason);
-- what still waits, by the external id a landing record resolves it by
CREATE INDEX feed_reject_waiting_idx ON feed_reject (source_id, external_id) WHERE resolved_at IS NULL;
