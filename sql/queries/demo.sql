-- name: count_districts()$
SELECT count(*) FROM area WHERE level = 'district';

-- name: list_demo_shops()
-- one active shop of each of a few trades, for the demo's printed links
SELECT DISTINCT ON (s.trade) s.code, s.name, t.name AS trade_name
FROM shop s JOIN trade t ON t.code = s.trade
WHERE s.status = 'active' AND s.trade IN ('catering', 'food_retail', 'pharmacy', 'hair_beauty')
ORDER BY s.trade, s.id;

-- name: get_database_size()$
SELECT pg_size_pretty(pg_database_size(current_database()));

-- name: get_demo_claim_shop()^
-- an active shop nobody has claimed yet, for the demo's printed claim code
SELECT s.code, s.name, s.owner_phone FROM shop s
WHERE s.status = 'active' AND s.claimed_at IS NULL AND s.owner_phone IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM account_shop x WHERE x.shop_id = s.id)
ORDER BY s.id LIMIT 1;

-- name: get_demo_merchant_shop(login)^
SELECT s.code, s.name FROM account a JOIN account_shop x ON x.account_id = a.id JOIN shop s ON s.id = x.shop_id
WHERE a.login = :login ORDER BY s.id LIMIT 1;
