-- The data-quality report per source (merchant_code/feeds/quality.py) and its cases.

-- name: set_feed_run_shape(id, shape)!
UPDATE feed_run SET shape = :shape WHERE id = :id;

-- name: list_quality_sources(name)
-- Every source (or the one named), with its owner department and the area its report covers:
-- `quality.area` of its config, else every area (its path NULL), and the district a case lands in.
SELECT s.id, s.name, s.kind, s.config, s.enabled, s.interval_seconds, s.last_success_at, s.owner_department,
       d.name AS department_name, d.name_en AS department_name_en,
       a.path AS area_path,
       coalesce(a.path, (SELECT path FROM area WHERE parent_id IS NULL ORDER BY path LIMIT 1)) AS case_area_path
FROM feed_source s
JOIN department d ON d.code = s.owner_department
LEFT JOIN area a ON a.code = s.config -> 'quality' ->> 'area'
WHERE :name::text IS NULL OR s.name = :name
ORDER BY s.name;

-- name: get_quality_coverage(source_id, source, area_path)^
-- The area's active shops, and how many of them the source's records (or its mapping) are about.
WITH scope AS (
    SELECT s.id FROM shop s JOIN area a ON a.id = s.area_id
    WHERE s.status = 'active' AND (:area_path::text IS NULL OR a.path = :area_path OR a.path LIKE :area_path || '.%')
),
matched AS (
    SELECT r.shop_id FROM feed_quality_records(:source) r WHERE r.shop_id IS NOT NULL
    UNION
    SELECT m.shop_id FROM feed_shop_map m WHERE m.source_id = :source_id
)
SELECT (SELECT count(*) FROM scope) AS shops,
       (SELECT count(*) FROM scope JOIN matched ON matched.shop_id = scope.id) AS matched;

-- name: list_quality_runs(source_id, limit)
-- The source's latest runs, newest first.
SELECT id, started_at, finished_at, status, fetched, inserted, updated, unchanged, quarantined, shape
FROM feed_run WHERE source_id = :source_id
ORDER BY started_at DESC, id DESC LIMIT :limit;

-- name: get_quality_freshness(source)^
-- The newest record's own time, and the typical gap between the times of its latest records (over
-- the 21 newest distinct times: 20 gaps).
WITH t AS (SELECT DISTINCT r.at FROM feed_quality_records(:source) r WHERE r.at IS NOT NULL ORDER BY r.at DESC LIMIT 21)
SELECT max(at) AS newest, (max(at) - min(at)) / nullif(count(*) - 1, 0) AS typical_gap FROM t;

-- name: list_quality_values(source, since, bins)
-- The records fetched since `since` (recent: true) against those fetched before: how many, how
-- many with an unknown part, the scores' mean, their correlation with the outcome (and over how
-- many pairs), and a histogram of the scores over `bins` equal bins between the source's lowest
-- and highest score.
WITH r AS (SELECT * FROM feed_quality_records(:source)),
b AS (SELECT min(score) AS lo, max(score) AS hi FROM r),
t AS (
    SELECT r.*, r.fetched >= :since AS recent,
           CASE WHEN r.score IS NULL THEN NULL WHEN b.hi = b.lo THEN 1
                ELSE least(width_bucket(r.score, b.lo, b.hi, :bins), :bins) END AS bin
    FROM r, b
),
h AS (SELECT recent, bin, count(*) AS n FROM t WHERE bin IS NOT NULL GROUP BY recent, bin)
SELECT t.recent, count(*) AS n, count(*) FILTER (WHERE t.unknown) AS unknowns,
       count(t.score) AS scored, avg(t.score) AS mean,
       corr(t.score, t.outcome) AS correlation, count(t.score * t.outcome) AS pairs,
       (SELECT array_agg(coalesce(h.n, 0)::int ORDER BY g) FROM generate_series(1, :bins) g
        LEFT JOIN h ON h.bin = g AND h.recent = t.recent) AS histogram,
       min(b.lo) AS lo, min(b.hi) AS hi
FROM t CROSS JOIN b
GROUP BY t.recent;

-- name: get_quality_duplicates(source)^
-- Records that repeat another of the same source under a different id (same shop, day or time,
-- and content).
SELECT count(*) AS records, count(*) - count(DISTINCT r.dup_key) AS duplicates
FROM feed_quality_records(:source) r;

-- name: list_quality_rejects(source_id)
-- What waits in the source's quarantine, by reason (records, each counted once however often
-- a re-run met it again; resolved ones landed later).
SELECT reason, count(*) AS n FROM feed_reject WHERE source_id = :source_id AND resolved_at IS NULL
GROUP BY reason ORDER BY count(*) DESC, reason LIMIT 20;

-- name: lock_quality_case(source_id)!
-- Two instances checking one source at once open one case.
SELECT pg_advisory_xact_lock(hashtextextended('quality-case:' || :source_id::bigint, 7));

-- name: get_open_quality_case(source_id)^
SELECT id, public_id FROM case_file
WHERE feed_source_id = :source_id AND category = 'data_quality' AND status NOT IN ('resolved', 'closed')
ORDER BY opened_at DESC LIMIT 1;

-- name: create_quality_case(source_id, description, area_path, now)^
-- A case about a source's data, for its owner department; no reporter, no shop.
INSERT INTO case_file (shop_id, source, category, department, description, sla_due_at, via, area_path,
                       feed_source_id, opened_at)
SELECT NULL, 'feed_signal', 'data_quality', s.owner_department, :description,
       :now::timestamptz + make_interval(hours => (SELECT sla_hours FROM case_category WHERE code = 'data_quality')),
       'system', :area_path, s.id, :now::timestamptz
FROM feed_source s WHERE s.id = :source_id
RETURNING id, public_id, department;
