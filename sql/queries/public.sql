-- The public API: public fields only (the citizen's document), never an owner's or staff data.

-- name: search_shops(trade, area_ids, grade, include_closed, after, limit)
-- No name: by trade, area (and below) and grade, in code order (a walk of the code index that
-- stops after a page), a page after the cursor.
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       NULL::int AS distance_m, NULL::smallint AS tier
FROM shop s JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE (:trade::text IS NULL OR s.trade = :trade)
  AND (:area_ids::bigint[] IS NULL OR s.area_id = ANY(:area_ids))
  AND (:grade::text IS NULL OR p.grade = :grade)
  AND (:include_closed OR s.status <> 'closed')
  AND s.code > :after
ORDER BY s.code
LIMIT :limit;

-- name: search_shops_by_gram(q, trade, area_ids, grade, include_closed, after_tier, after_code, limit)
-- One or two characters: one walk of the postings in (tier, code) order from the cursor, the
-- filters applied on the index entries as it goes, stopped after a page (migration 0033).
WITH hits AS (
    SELECT n.tier, n.code
    FROM shop_name_gram n
    WHERE n.gram = lower(:q) AND (n.tier, n.code) > (:after_tier::smallint, :after_code::text)
      AND (:trade::text IS NULL OR n.trade = :trade)
      AND (:area_ids::bigint[] IS NULL OR n.area_id = ANY(:area_ids))
      AND (:include_closed OR NOT n.closed)
      AND (:grade::text IS NULL OR EXISTS (
          SELECT 1 FROM shop g JOIN shop_profile gp ON gp.shop_id = g.id WHERE g.code = n.code AND gp.grade = :grade))
    ORDER BY n.tier, n.code
    LIMIT :limit
)
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       NULL::int AS distance_m, h.tier
FROM hits h JOIN shop s ON s.code = h.code JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
ORDER BY h.tier, h.code;

-- name: search_shops_by_name(q, gram, trade, area_ids, grade, include_closed, after_tier, after_code, limit)
-- Three characters or more: the candidates are the postings of q's rarest fragment (`gram`, at
-- most search.CAP of them) or, when every fragment is common (gram NULL), the GIN intersection of
-- all its fragments; each is ranked against the whole query (exact, prefix, holds it).
WITH candidates AS (
    SELECT n.code FROM shop_name_gram n
    WHERE :gram::text IS NOT NULL AND n.gram = :gram AND (:trade::text IS NULL OR n.trade = :trade)
      AND (:area_ids::bigint[] IS NULL OR n.area_id = ANY(:area_ids))
      AND (:include_closed OR NOT n.closed)
    UNION ALL
    SELECT s.code FROM shop s
    WHERE :gram::text IS NULL
      AND (name_bigrams(s.name) @> name_bigrams(:q) OR name_bigrams(s.name_en) @> name_bigrams(:q))
), ranked AS (
    SELECT s.id, s.code, least(name_rank(s.name, lower(:q)), name_rank(s.name_en, lower(:q))) AS tier
    FROM candidates c JOIN shop s ON s.code = c.code
    WHERE (:trade::text IS NULL OR s.trade = :trade)
      AND (:area_ids::bigint[] IS NULL OR s.area_id = ANY(:area_ids))
      AND (:include_closed OR s.status <> 'closed')
)
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       NULL::int AS distance_m, r.tier
FROM ranked r JOIN shop s ON s.id = r.id JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE r.tier IS NOT NULL AND (r.tier, r.code) > (:after_tier::smallint, :after_code::text)
  AND (:grade::text IS NULL OR p.grade = :grade)
ORDER BY r.tier, r.code
LIMIT :limit;

-- name: get_rarest_name_gram(q, cap)^
-- q's rarest fragment and its postings, counted no further than cap + 1 (migration 0033).
SELECT r.gram, r.n FROM rarest_name_gram(:q, :cap) AS r;

-- name: search_shops_near(lat, lon, radius_m, q, gram, trade, area_ids, grade, include_closed, offset, limit)
-- Nearest first within the radius. A rare name (`gram`: its rarest fragment's postings, at most
-- search.CAP) gives its candidates, all of them sorted by distance. Otherwise the candidates come
-- from walking the KNN index on (lon, lat) in planar order (no bounding box: a box around a dense
-- district holds most of it, and would turn the walk into a scan and a sort), keeping the names
-- that match (a common name is dense, so the walk is short); three times the page, then exact
-- great-circle metres sort them (at this scale the planar order is close to the true one).
-- One character matches names that start with it, longer queries names that hold it.
WITH candidates AS (
    SELECT s.id FROM shop_name_gram n JOIN shop s ON s.code = n.code
    WHERE :gram::text IS NOT NULL AND n.gram = :gram AND (:trade::text IS NULL OR n.trade = :trade)
      AND (:area_ids::bigint[] IS NULL OR n.area_id = ANY(:area_ids))
      AND (:include_closed OR NOT n.closed)
    UNION ALL
    (SELECT s.id
     FROM shop s
     WHERE :gram::text IS NULL AND s.lat IS NOT NULL AND s.lon IS NOT NULL
       AND (:q::text IS NULL
            OR least(name_rank(s.name, lower(:q)), name_rank(s.name_en, lower(:q)))
               <= CASE WHEN length(:q) = 1 THEN 1 ELSE 2 END)
       AND (:trade::text IS NULL OR s.trade = :trade)
       AND (:include_closed OR s.status <> 'closed')
       AND (:area_ids::bigint[] IS NULL OR s.area_id = ANY(:area_ids))
     ORDER BY point(s.lon, s.lat) <-> point(:lon::float8, :lat::float8)
     LIMIT (:offset::int + :limit::int) * 3 + 30)
), measured AS (
    SELECT s.id, round(6371000 * 2 * asin(sqrt(
               power(sin(radians(s.lat - :lat::float8) / 2), 2)
               + cos(radians(:lat::float8)) * cos(radians(s.lat))
               * power(sin(radians(s.lon - :lon::float8) / 2), 2))))::int AS distance_m
    FROM candidates c JOIN shop s ON s.id = c.id
    WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL
      AND (:q::text IS NULL
           OR least(name_rank(s.name, lower(:q)), name_rank(s.name_en, lower(:q)))
              <= CASE WHEN length(:q) = 1 THEN 1 ELSE 2 END)
)
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status,
       p.grade, p.grade_date, (p.citizen_doc ->> 'rating')::float8 AS rating,
       coalesce((p.citizen_doc ->> 'review_count')::int, 0) AS review_count, p.rebuilt_at, p.version,
       c.distance_m, NULL::smallint AS tier
FROM measured c JOIN shop s ON s.id = c.id JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
     LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE c.distance_m <= :radius_m AND (:grade::text IS NULL OR p.grade = :grade)
ORDER BY c.distance_m, s.code
OFFSET :offset LIMIT :limit;

-- name: list_area_ids(path)
-- An area and every area below it (a range scan of the path pattern index).
SELECT id FROM area WHERE path = :path OR path LIKE :path || '.%';

-- name: get_area_path(code)$
SELECT path FROM area WHERE code = :code;

-- name: get_public_profile(code)^
-- with whom the shop's notices are for (notices.py): none for a closed shop
SELECT p.citizen_doc, p.version, p.rebuilt_at, p.change_seq,
       CASE WHEN s.status <> 'closed' THEN s.trade || ' ' || s.area_id END AS audience
FROM shop_profile p JOIN shop s ON s.id = p.shop_id WHERE p.code = :code;

-- name: list_profile_changes(since, limit)
-- Profiles written after the cursor, in the order they were written; the public document of each.
SELECT p.change_seq, p.code, p.version, p.rebuilt_at, p.citizen_doc
FROM shop_profile p
WHERE p.change_seq > :since
ORDER BY p.change_seq
LIMIT :limit;
