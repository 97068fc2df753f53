-- The public API: public fields only (the citizen's document), never an owner's or staff data.

-- name: search_shops(q, trade, area_prefix, grade, include_closed, after, limit)
-- By name, trade, area (and below) and grade, in code order, a page after the cursor.
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       NULL::int AS distance_m
FROM shop s JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE (:q::text IS NULL
       -- every two-character fragment of the query is in the name (the bigram index), then the
       -- name holds the query itself
       OR (name_bigrams(s.name) @> name_bigrams(:q) AND s.name ILIKE '%' || :q || '%')
       OR (name_bigrams(s.name_en) @> name_bigrams(:q) AND s.name_en ILIKE '%' || :q || '%'))
  AND (:trade::text IS NULL OR s.trade = :trade)
  AND (:area_prefix::text IS NULL OR a.path = :area_prefix OR a.path LIKE :area_prefix || '.%')
  AND (:grade::text IS NULL OR p.grade = :grade)
  AND (:include_closed OR s.status <> 'closed')
  AND s.code > :after
ORDER BY s.code
LIMIT :limit;

-- name: search_shops_near(lat, lon, radius_m, q, trade, area_prefix, grade, include_closed, offset, limit)
-- Nearest first within the radius. The candidates come from walking the KNN index on (lon, lat)
-- in planar order (no bounding box: a box around a dense district holds most of it, and would
-- turn the walk into a scan and a sort); three times the page, then exact great-circle metres
-- sort them (at this scale the planar order is close to the true one).
WITH candidates AS (
    SELECT s.id, round(6371000 * 2 * asin(sqrt(
               power(sin(radians(s.lat - :lat::float8) / 2), 2)
               + cos(radians(:lat::float8)) * cos(radians(s.lat))
               * power(sin(radians(s.lon - :lon::float8) / 2), 2))))::int AS distance_m
    FROM shop s JOIN area a ON a.id = s.area_id LEFT JOIN shop_profile p ON p.shop_id = s.id
    WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL
      AND (:q::text IS NULL
           OR (name_bigrams(s.name) @> name_bigrams(:q) AND s.name ILIKE '%' || :q || '%')
           OR (name_bigrams(s.name_en) @> name_bigrams(:q) AND s.name_en ILIKE '%' || :q || '%'))
      AND (:trade::text IS NULL OR s.trade = :trade)
      AND (:include_closed OR s.status <> 'closed')
      AND (:area_prefix::text IS NULL OR a.path = :area_prefix OR a.path LIKE :area_prefix || '.%')
      AND (:grade::text IS NULL OR p.grade = :grade)
    ORDER BY point(s.lon, s.lat) <-> point(:lon::float8, :lat::float8)
    LIMIT (:offset::int + :limit::int) * 3 + 30
)
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       c.distance_m
FROM candidates c JOIN shop s ON s.id = c.id JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE c.distance_m <= :radius_m
ORDER BY c.distance_m, s.code
OFFSET :offset LIMIT :limit;

-- name: get_area_path(code)$
SELECT path FROM area WHERE code = :code;

-- name: get_public_profile(code)^
SELECT p.citizen_doc, p.version, p.rebuilt_at, p.change_seq FROM shop_profile p WHERE p.code = :code;

-- name: list_profile_changes(since, limit)
-- Profiles written after the cursor, in the order they were written; the public document of each.
SELECT p.change_seq, p.code, p.version, p.rebuilt_at, p.citizen_doc
FROM shop_profile p
WHERE p.change_seq > :since
ORDER BY p.change_seq
LIMIT :limit;
