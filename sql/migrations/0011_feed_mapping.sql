-- What the feed runner needs beyond 0005: the mapping from a source's own business ids to shops,
-- the state of a source's breaker, and the raw bytes of rejected records.

-- A source's business id (LIVES business_id, FHRSID, a platform's shop ref) -> our shop, learned
-- from the source's shop records matched by USCC, licence number or name and address.
CREATE TABLE feed_shop_map (
    source_id       bigint NOT NULL REFERENCES feed_source (id),
    business_id     text NOT NULL,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    matched_by      text NOT NULL CHECK (matched_by IN ('business_id', 'uscc', 'licence_number', 'name_address', 'manual')),
    confidence      real NOT NULL DEFAULT 1 CHECK (confidence BETWEEN 0 AND 1),
    learned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, business_id)
);
CREATE INDEX feed_shop_map_shop_idx ON feed_shop_map (shop_id);

ALTER TABLE feed_source
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN last_success_at timestamptz;

-- rejects keep the record's exact bytes (a CSV line may not be valid UTF-8)
ALTER TABLE feed_reject ADD COLUMN raw_bytes bytea;
ALTER TABLE feed_reject ALTER COLUMN raw DROP NOT NULL;

-- a source's records carry its own change time, so an older version never overwrites a newer one
ALTER TABLE inspection ADD COLUMN source_updated_at timestamptz;
ALTER TABLE licence ADD COLUMN source_updated_at timestamptz;
ALTER TABLE review ADD COLUMN source_updated_at timestamptz;

