-- name: lock_qr_keys()!
-- Serialises making and rotating signing keys (transaction-scoped: the pool drops session locks).
SELECT pg_advisory_xact_lock(hashtext('merchant_code.qr_key'));

-- name: get_active_qr_key()^
-- The key that signs new stickers: the newest one neither retired nor revoked.
SELECT kid, public_key FROM qr_key
WHERE retired_at IS NULL AND revoked_at IS NULL
ORDER BY created_at DESC, kid LIMIT 1;

-- name: count_qr_keys_by_kid(kid)$
SELECT count(*) FROM qr_key WHERE kid = :kid;

-- name: create_qr_key(kid, public_key)!
INSERT INTO qr_key (kid, public_key) VALUES (:kid, :public_key);

-- name: retire_active_qr_keys()
UPDATE qr_key SET retired_at = now()
WHERE retired_at IS NULL AND revoked_at IS NULL
RETURNING kid;

-- name: revoke_qr_key(kid)^
UPDATE qr_key SET revoked_at = coalesce(revoked_at, now()), retired_at = coalesce(retired_at, now())
WHERE kid = :kid
RETURNING kid, revoked_at;

-- name: list_qr_keys()
SELECT kid, public_key, created_at, retired_at, revoked_at FROM qr_key ORDER BY created_at, kid;

-- name: list_qr_revoked_codes()
SELECT code, revoked_at, reason FROM qr_revocation ORDER BY revoked_at, code;

-- name: create_qr_revocation(code, reason)^
-- Only a code that was issued can be revoked; revoking it again keeps the first date and reason.
INSERT INTO qr_revocation (code, reason)
SELECT s.code, :reason FROM shop s WHERE s.code = :code
ON CONFLICT (code) DO UPDATE SET reason = qr_revocation.reason
RETURNING code, revoked_at, reason;

-- name: get_qr_sticker_inputs(code)^
-- What a sticker and a poster show: names, trade, the latest inspection's grade; and whether
-- the code was revoked (no sticker is made for it then).
SELECT s.code, s.name, t.name AS trade_name, t.name_en AS trade_name_en, i.grade,
       EXISTS (SELECT 1 FROM qr_revocation r WHERE r.code = s.code) AS revoked
FROM shop s
JOIN trade t ON t.code = s.trade
LEFT JOIN LATERAL (
    SELECT grade FROM inspection WHERE shop_id = s.id ORDER BY inspected_on DESC, id DESC LIMIT 1
) i ON true
WHERE s.code = :code;

-- name: get_qr_area_by_code(code)^
SELECT code, path, name FROM area WHERE code = :code;

-- name: list_qr_sheet_shops(path)
-- Every shop of the area and the areas below it that should carry a sticker: not closed, code
-- not revoked. By area, then code, so that a grid's stickers sit together on the sheet.
SELECT s.code, s.name
FROM shop s JOIN area a ON a.id = s.area_id
WHERE (a.path = :path OR a.path LIKE :path || '.%')
  AND s.status <> 'closed'
  AND NOT EXISTS (SELECT 1 FROM qr_revocation r WHERE r.code = s.code)
ORDER BY a.path, s.code;
