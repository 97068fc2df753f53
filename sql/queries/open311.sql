-- Open311 GeoReport v2 (merchant_code/routes/open311.py): API keys, locating a shop, and the
-- service requests (complaint cases and the reports that joined them) as the public sees them:
-- no reporter's contact, no reporter's text, no staff member.

-- name: get_open311_key(key_hash)^
SELECT id, name FROM open311_key WHERE key_hash = :key_hash AND disabled_at IS NULL;

-- name: create_open311_key(name, key_hash)$
INSERT INTO open311_key (name, key_hash) VALUES (:name, :key_hash)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: disable_open311_key(name)$
WITH gone AS (
    UPDATE open311_key SET disabled_at = now() WHERE name = :name AND disabled_at IS NULL RETURNING 1
)
SELECT count(*) FROM gone;

-- name: list_open311_keys()
SELECT name, created_at, disabled_at FROM open311_key ORDER BY name;

-- name: find_open311_shop_near(lat, lon, metres)^
-- The nearest shop that is not closed within `metres` of a point: great-circle distance
-- (haversine on the mean Earth radius), after a bounding box with some margin.
WITH p AS (
    SELECT :lat::float8 AS lat, :lon::float8 AS lon, :metres::float8 AS metres,
           :metres::float8 / 111195.0 * 1.2 AS dlat
)
SELECT s.id, s.code, d.metres AS distance
FROM p, shop s
CROSS JOIN LATERAL (
    SELECT 2 * 6371008.8 * asin(least(1.0, sqrt(
        power(sin(radians(s.lat - p.lat) / 2), 2)
        + cos(radians(p.lat)) * cos(radians(s.lat)) * power(sin(radians(s.lon - p.lon) / 2), 2)
    ))) AS metres
) d
WHERE s.status <> 'closed' AND s.lat IS NOT NULL AND s.lon IS NOT NULL
  AND s.lat BETWEEN p.lat - p.dlat AND p.lat + p.dlat
  AND s.lon BETWEEN p.lon - p.dlat / greatest(cos(radians(p.lat)), 0.01)
                AND p.lon + p.dlat / greatest(cos(radians(p.lat)), 0.01)
  AND d.metres <= p.metres
ORDER BY d.metres, s.id
LIMIT 1;

-- name: list_open311_requests(codes, states, start, end, days, limit)
-- Complaint cases opened, and reports that joined one, within [start, end): newest first. A report
-- joins a case opened at most `days` before it, so the cases' time index bounds both halves.
WITH q AS (
    SELECT c.request_id AS service_request_id, c.id AS case_id, false AS joined, c.opened_at AS requested_at
    FROM case_file c
    WHERE c.source = 'complaint' AND c.opened_at >= :start::timestamptz AND c.opened_at < :end::timestamptz
      AND (:codes::text[] IS NULL OR c.category = ANY(:codes::text[]))
      AND (:states::text[] IS NULL OR c.status = ANY(:states::text[]))
    UNION ALL
    SELECT r.request_id, c.id, true, r.created_at
    FROM case_file c JOIN case_report r ON r.case_id = c.id
    WHERE c.source = 'complaint'
      AND c.opened_at >= :start::timestamptz - make_interval(days => :days) AND c.opened_at < :end::timestamptz
      AND r.created_at >= :start::timestamptz AND r.created_at < :end::timestamptz
      AND (:codes::text[] IS NULL OR c.category = ANY(:codes::text[]))
      AND (:states::text[] IS NULL OR c.status = ANY(:states::text[]))
)
SELECT q.service_request_id, q.joined, q.requested_at, c.status, c.category,
       k.name AS category_name, k.name_en AS category_name_en,
       d.name AS department_name, d.name_en AS department_name_en,
       c.updated_at, c.sla_due_at,
       s.code AS shop_code, s.name AS shop_name, s.name_en AS shop_name_en, s.address AS shop_address,
       s.lat, s.lon,
       (SELECT e.note FROM case_event e
        WHERE e.case_id = c.id AND e.public AND e.note IS NOT NULL AND e.actor_account_id IS NOT NULL
          AND e.kind <> 'reopened_by_reporter'
        ORDER BY e.at DESC, e.id DESC LIMIT 1) AS status_notes
FROM q JOIN case_file c ON c.id = q.case_id
     LEFT JOIN shop s ON s.id = c.shop_id
     LEFT JOIN case_category k ON k.code = c.category
     LEFT JOIN department d ON d.code = c.department
ORDER BY q.requested_at DESC, q.service_request_id
LIMIT :limit;

-- name: list_open311_requests_by_id(ids)
-- The same, for the given request ids (a case's first report's, or a joined report's): never tracking numbers.
WITH q AS (
    SELECT c.request_id AS service_request_id, c.id AS case_id, false AS joined, c.opened_at AS requested_at
    FROM case_file c
    WHERE c.source = 'complaint' AND c.request_id = ANY(:ids::text[])
    UNION ALL
    SELECT r.request_id, c.id, true, r.created_at
    FROM case_report r JOIN case_file c ON c.id = r.case_id
    WHERE c.source = 'complaint' AND r.request_id = ANY(:ids::text[])
)
SELECT q.service_request_id, q.joined, q.requested_at, c.status, c.category,
       k.name AS category_name, k.name_en AS category_name_en,
       d.name AS department_name, d.name_en AS department_name_en,
       c.updated_at, c.sla_due_at,
       s.code AS shop_code, s.name AS shop_name, s.name_en AS shop_name_en, s.address AS shop_address,
       s.lat, s.lon,
       (SELECT e.note FROM case_event e
        WHERE e.case_id = c.id AND e.public AND e.note IS NOT NULL AND e.actor_account_id IS NOT NULL
          AND e.kind <> 'reopened_by_reporter'
        ORDER BY e.at DESC, e.id DESC LIMIT 1) AS status_notes
FROM q JOIN case_file c ON c.id = q.case_id
     LEFT JOIN shop s ON s.id = c.shop_id
     LEFT JOIN case_category k ON k.code = c.category
     LEFT JOIN department d ON d.code = c.department
ORDER BY q.requested_at DESC, q.service_request_id;

-- name: list_open311_shops_named(text, names, addresses)
-- The shops (not closed) an address_string names (routes/open311_place.py): a name with its
-- address (score 2; `names`/`addresses` are the string's splits, pairwise) or the whole string as a
-- name, an English name (any case) or an address (score 1). The best two: a tie names no one.
-- Each branch is an index lookup (shop_name_address_idx, shop_address_idx, shop_name_en_lower_idx).
WITH hit AS (
    SELECT s.id, s.code, 2 AS score
    FROM unnest(:names::text[], :addresses::text[]) AS p(name, address)
    JOIN shop s ON s.address = p.address AND (s.name = p.name OR lower(s.name_en) = lower(p.name))
    WHERE s.status <> 'closed'
    UNION ALL
    SELECT s.id, s.code, 1
    FROM shop s
    WHERE s.status <> 'closed'
      AND (s.name = :text OR s.address = :text OR lower(s.name_en) = lower(:text))
)
SELECT id, code, max(score) AS score FROM hit GROUP BY id, code ORDER BY max(score) DESC, id LIMIT 2;

-- name: get_open311_request_id(id)$
-- A service request's id, if one has it (a complaint case's first report, or a report that joined one).
SELECT coalesce(
    (SELECT c.request_id FROM case_file c WHERE c.source = 'complaint' AND c.request_id = :id),
    (SELECT r.request_id FROM case_report r JOIN case_file c ON c.id = r.case_id
     WHERE c.source = 'complaint' AND r.request_id = :id)
);
