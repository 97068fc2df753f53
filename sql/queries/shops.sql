-- name: get_shop_contact(code)^
SELECT id, code, opening_hours, phone, name_en FROM shop WHERE code = :code;

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
