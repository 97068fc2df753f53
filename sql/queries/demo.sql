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
