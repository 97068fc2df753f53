-- A data-quality report per source (merchant_code/feeds/quality.py): each run keeps the shape of
-- what it fetched, each source has a department that owns its quality, and a case may be about a
-- source instead of a shop.

-- the columns (CSV) or keys (JSON) or element names (XML) of a run's pages with a coarse type
-- each ({"inspections.csv": {"score": "integer", ...}}), so that a later run can tell what changed
ALTER TABLE feed_run ADD COLUMN shape jsonb;

-- whom a source's bad data is reported to; by default the department that uses its records
ALTER TABLE feed_source ADD COLUMN owner_department text REFERENCES department (code);
CREATE FUNCTION feed_source_owner_by_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_department IS NULL THEN
        NEW.owner_department := CASE NEW.kind WHEN 'lives' THEN 'food_safety' WHEN 'fhrs' THEN 'food_safety'
                                              WHEN 'licence_registry' THEN 'licensing' ELSE 'consumer' END;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER feed_source_owner BEFORE INSERT OR UPDATE ON feed_source
    FOR EACH ROW EXECUTE FUNCTION feed_source_owner_by_kind();
UPDATE feed_source SET owner_department = NULL;  -- the trigger fills it by kind
ALTER TABLE feed_source ALTER COLUMN owner_department SET NOT NULL;

-- a case about a source's data has no shop: it names the source (kept when the source is removed,
-- then without it) and lies in the source's area, or the jurisdiction's district
INSERT INTO case_category (code, name, name_en, sla_hours, public)
VALUES ('data_quality', '数据质量', 'Data quality', 168, false);
ALTER TABLE case_file ADD COLUMN feed_source_id bigint REFERENCES feed_source (id) ON DELETE SET NULL;
CREATE INDEX case_file_feed_source_idx ON case_file (feed_source_id)
    WHERE feed_source_id IS NOT NULL AND status NOT IN ('resolved', 'closed');

-- Every record a source brought, whatever its table, in one shape for the report: when it was
-- fetched, its own time, its score, its outcome (1 good, 0.5 middle, 0 bad: from the result, else
-- the grade), whether a part of it is unknown, and a key that two copies of one visit or entry
-- share under different ids.
CREATE FUNCTION feed_quality_records(src text)
RETURNS TABLE (shop_id bigint, fetched timestamptz, at timestamptz, score float8, outcome float8,
               unknown boolean, dup_key text)
LANGUAGE sql STABLE AS $$
    SELECT i.shop_id, i.fetched_at, coalesce(i.source_updated_at, i.inspected_on::timestamptz), i.score::float8,
           CASE i.result WHEN 'pass' THEN 1.0 WHEN 'rectify' THEN 0.5 WHEN 'fail' THEN 0.0
                ELSE CASE i.grade WHEN 'A' THEN 1.0 WHEN 'B' THEN 0.5 WHEN 'C' THEN 0.0 END END,
           i.score IS NULL OR i.result IS NULL
               OR EXISTS (SELECT 1 FROM violation v WHERE v.inspection_id = i.id AND v.critical IS NULL),
           concat_ws('|', i.shop_id, i.inspected_on, i.kind, i.score, i.result,
                     (SELECT string_agg(v.code, ',' ORDER BY v.code) FROM violation v WHERE v.inspection_id = i.id))
    FROM inspection i WHERE i.source = src
    UNION ALL
    SELECT l.shop_id, l.fetched_at, coalesce(l.source_updated_at, l.valid_from::timestamptz, l.issued_on::timestamptz),
           NULL, NULL, l.valid_to IS NULL, concat_ws('|', l.shop_id, l.number, l.kind, l.valid_from, l.valid_to)
    FROM licence l WHERE l.source = src
    UNION ALL
    SELECT r.shop_id, r.fetched_at, coalesce(r.source_updated_at, r.edited_at, r.posted_at), r.rating::float8,
           NULL, false, concat_ws('|', r.shop_id, r.posted_at, r.rating, r.body)
    FROM review r WHERE r.source = src AND r.deleted_at IS NULL
    UNION ALL
    SELECT x.shop_id, x.fetched_at, x.published_at, NULL, NULL, x.tone IS NULL,
           concat_ws('|', coalesce(x.url, x.title), x.published_at)
    FROM sentiment_item x WHERE x.source = src
$$;
