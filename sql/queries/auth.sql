-- name: get_account_for_login(login)^
SELECT id, role, password_hash, disabled_at IS NOT NULL AS disabled FROM account WHERE login = :login;

-- name: count_auth_attempts_before(key, minutes, id)$
-- attempts on this key within the window recorded before (or as) this one
SELECT count(*) FROM auth_attempt
WHERE key = :key AND id <= :id AND at > now() - make_interval(mins => :minutes);

-- name: delete_auth_attempts(ids)!
DELETE FROM auth_attempt WHERE id = ANY(:ids::bigint[]);

-- name: delete_old_auth_failures(minutes)!
DELETE FROM auth_attempt WHERE at < now() - make_interval(mins => :minutes);

-- name: create_auth_attempts(keys)$
WITH made AS (INSERT INTO auth_attempt (key) SELECT k FROM unnest(:keys::text[]) WITH ORDINALITY AS u(k, n)
              ORDER BY n RETURNING id)
SELECT array_agg(id ORDER BY id) FROM made;

-- name: delete_auth_failures(keys)!
DELETE FROM auth_attempt WHERE key = ANY(:keys::text[]);

-- name: create_session(id, account_id, expires_at, client)!
INSERT INTO session (id, account_id, expires_at, client) VALUES (:id, :account_id, :expires_at, :client);

-- name: get_principal_by_session(id, account_id)^
-- One read per authenticated request: the session, its account, its area path and its shops.
SELECT a.id AS account_id, a.login, a.role, s.id AS session_id, a.area_id, ar.path AS area_path,
       coalesce((SELECT array_agg(x.shop_id ORDER BY x.shop_id) FROM account_shop x
                 WHERE x.account_id = a.id), '{}') AS shop_ids,
       a.permissions
FROM session s
JOIN account a ON a.id = s.account_id
LEFT JOIN area ar ON ar.id = a.area_id
WHERE s.id = :id AND s.account_id = :account_id
  AND s.revoked_at IS NULL AND s.expires_at > now() AND a.disabled_at IS NULL;

-- name: revoke_session(id)!
UPDATE session SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL;

-- name: revoke_sessions_of_account(account_id, keep)!
UPDATE session SET revoked_at = now()
WHERE account_id = :account_id AND revoked_at IS NULL AND id IS DISTINCT FROM :keep;

-- name: get_password_hash(account_id)$
SELECT password_hash FROM account WHERE id = :account_id;

-- name: update_password(account_id, password_hash)!
UPDATE account SET password_hash = :password_hash, password_changed_at = now() WHERE id = :account_id;

-- name: get_me(account_id)^
SELECT a.login, a.role, a.display_name, ar.code AS area_code, ar.name AS area_name,
       coalesce((SELECT array_agg(s.code ORDER BY s.code) FROM account_shop x JOIN shop s ON s.id = x.shop_id
                 WHERE x.account_id = a.id), '{}') AS shops,
       a.permissions
FROM account a LEFT JOIN area ar ON ar.id = a.area_id
WHERE a.id = :account_id;

-- name: get_account_by_login(login)^
SELECT a.id, a.login, a.role, a.disabled_at, ar.code AS area_code
FROM account a LEFT JOIN area ar ON ar.id = a.area_id WHERE a.login = :login;

-- name: create_account(login, role, area_id, display_name, phone, password_hash, permissions)$
INSERT INTO account (login, role, area_id, display_name, phone, password_hash, permissions)
VALUES (:login, :role, :area_id, :display_name, :phone, :password_hash, :permissions)
RETURNING id;

-- name: unlink_shop_owners(shop_id)$
WITH gone AS (DELETE FROM account_shop WHERE shop_id = :shop_id RETURNING account_id)
SELECT count(*) FROM gone;

-- name: link_account_shop(account_id, shop_id)!
INSERT INTO account_shop (account_id, shop_id) VALUES (:account_id, :shop_id) ON CONFLICT DO NOTHING;

-- name: disable_account(account_id)!
UPDATE account SET disabled_at = now() WHERE id = :account_id AND disabled_at IS NULL;

-- name: get_area_by_code(code)^
SELECT id, path FROM area WHERE code = :code;

-- name: get_shop_for_claim(code)^
SELECT id, code, owner_phone, claim_code_hash, claimed_at FROM shop WHERE code = :code;

-- name: set_claim_code(code, claim_code_hash)$
UPDATE shop SET claim_code_hash = :claim_code_hash WHERE code = :code RETURNING id;

-- name: use_claim_code(id, claim_code_hash)$
-- Only the first of two simultaneous claims with the same code gets the row back.
UPDATE shop SET claim_code_hash = NULL, claimed_at = now()
WHERE id = :id AND claim_code_hash = :claim_code_hash
RETURNING id;

-- name: list_accounts_in_scope(prefix, after, limit)
-- Accounts an admin (prefix NULL) or a manager (their area path) looks after, by login.
SELECT a.login, a.role, a.display_name, ar.code AS area_code, a.disabled_at IS NOT NULL AS disabled
FROM account a LEFT JOIN area ar ON ar.id = a.area_id
WHERE (:prefix::text IS NULL OR ar.path = :prefix OR ar.path LIKE :prefix || '.%')
  AND a.login > :after
ORDER BY a.login LIMIT :limit;

-- name: delete_ended_sessions(days)!
-- Sessions that expired or were revoked more than `days` ago are of no use to anyone.
DELETE FROM session
WHERE expires_at < now() - make_interval(days => :days)
   OR revoked_at < now() - make_interval(days => :days);
