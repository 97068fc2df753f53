-- name: get_citizen_shop_by_code(code, today)^
-- Public fields only: no owner, staff or internal id leaves this query.
SELECT s.code, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
       a.name AS area_name, s.address, s.status, s.opening_hours, s.phone,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'kind', l.kind,
                   'valid_to', l.valid_to,
                   'state', CASE
                       WHEN l.status = 'pending_verification' THEN 'pending'
                       WHEN l.status <> 'active' THEN 'invalid'
                       WHEN l.valid_to < :today THEN 'expired'
                       WHEN l.valid_to < :today + 30 THEN 'expiring'
                       ELSE 'valid' END)
               ORDER BY l.kind), '[]')
          FROM licence l WHERE l.shop_id = s.id) AS licences,
       i.inspected_on AS last_inspected_on, i.result AS last_result, i.grade,
       (SELECT round(avg(r.rating), 1)::float8 FROM review r
         WHERE r.shop_id = s.id AND r.deleted_at IS NULL) AS rating,
       (SELECT count(*) FROM review r WHERE r.shop_id = s.id AND r.deleted_at IS NULL) AS review_count
FROM shop s
JOIN trade t ON t.code = s.trade
JOIN area a ON a.id = s.area_id
LEFT JOIN LATERAL (
    SELECT inspected_on, result, grade FROM inspection
    WHERE shop_id = s.id ORDER BY inspected_on DESC, id DESC LIMIT 1
) i ON true
WHERE s.code = :code;
