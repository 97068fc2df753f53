-- name: get_account_for_login(login)^
SELECT id, password_hash, disabled_at IS NOT NULL AS disabled FROM account WHERE login = :login;

-- name: count_recent_auth_failures(keys, minutes)$
SELECT count(*) FROM auth_attempt
WHERE key = ANY(:keys::text[]) AND at > now() - make_interval(mins => :minutes);

-- name: create_auth_failures(keys)!
INSERT INTO auth_attempt (key) SELECT unnest(:keys::text[]);

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
