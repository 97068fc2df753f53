-- name: get_shop_record_by_code(code, today)^
-- Everything about one shop for the merchant and inspector views. `id` and `area_path` are for
-- the access check only; the view structs have no field for them.
SELECT s.id, a.path AS area_path, s.code, s.uscc, s.name, s.name_en, s.trade, t.name AS trade_name,
       a.code AS area_code, a.name AS area_name, s.address, s.lat, s.lon, s.status, s.opening_hours,
       s.phone, s.owner_name, s.owner_phone, s.owner_id_number,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'kind', l.kind, 'number', l.number, 'valid_from', l.valid_from, 'valid_to', l.valid_to,
                   'state', CASE
                       WHEN l.status = 'pending_verification' THEN 'pending'
                       WHEN l.status <> 'active' THEN 'invalid'
                       WHEN l.valid_to < :today THEN 'expired'
                       WHEN l.valid_to < :today + 30 THEN 'expiring'
                       ELSE 'valid' END)
               ORDER BY l.kind, l.id), '[]')
          FROM licence l WHERE l.shop_id = s.id) AS licences,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', st.name, 'role', st.role, 'phone', st.phone, 'id_number', st.id_number,
                   'health_cert_number', st.health_cert_number,
                   'health_cert_valid_to', st.health_cert_valid_to) ORDER BY st.id), '[]')
          FROM staff st WHERE st.shop_id = s.id AND st.active) AS staff,
       (SELECT coalesce(jsonb_agg(x ORDER BY x.inspected_on DESC), '[]') FROM (
            SELECT i.inspected_on, i.kind, i.result, i.grade,
                   (SELECT count(*) FROM violation v WHERE v.inspection_id = i.id) AS violations
            FROM inspection i WHERE i.shop_id = s.id
            ORDER BY i.inspected_on DESC, i.id DESC LIMIT 10) x) AS inspections
FROM shop s
JOIN trade t ON t.code = s.trade
JOIN area a ON a.id = s.area_id
WHERE s.code = :code;

-- name: list_shops_of_account(account_id)
SELECT s.code, s.name, s.trade, a.code AS area_code, s.address, s.status
FROM account_shop x JOIN shop s ON s.id = x.shop_id JOIN area a ON a.id = s.area_id
WHERE x.account_id = :account_id ORDER BY s.code;

-- name: list_shops_in_scope(prefix, after, limit)
-- Shops whose area is the scope's area or below it (`prefix` NULL: every shop), by code.
SELECT s.code, s.name, s.trade, a.code AS area_code, s.address, s.status
FROM shop s JOIN area a ON a.id = s.area_id
WHERE (:prefix::text IS NULL OR a.path = :prefix OR a.path LIKE :prefix || '.%')
  AND s.code > :after
ORDER BY s.code LIMIT :limit;

-- name: update_shop_contact(id, opening_hours, phone, name_en)!
UPDATE shop SET opening_hours = :opening_hours, phone = :phone, name_en = :name_en, updated_at = now()
WHERE id = :id;

-- name: mark_profile_dirty(shop_id)!
INSERT INTO profile_dirty (shop_id) VALUES (:shop_id)
ON CONFLICT (shop_id) DO UPDATE SET marked_at = now();
