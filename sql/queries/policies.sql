-- Policy pushes: authoring, the outbox, the inbox and reach (merchant_code/policies.py).

-- name: get_areas_by_codes(codes)
SELECT id, code, path, name FROM area WHERE code = ANY(:codes::text[]);

-- name: count_audience(trades, area_ids, filters, today)$
SELECT count(*) FROM policy_audience(:trades::text[], :area_ids::bigint[], :filters::jsonb, :today::date);

-- name: create_policy(title, body_md, links, trades, area_ids, filters, send_at, cron, next_at, kind, corrects_policy_id, author_account_id)^
INSERT INTO policy (title, body_md, links, trades, area_ids, filters, send_at, cron, next_at, status, kind,
                    corrects_policy_id, author_account_id)
VALUES (:title, :body_md, :links, :trades, :area_ids, :filters, :send_at, :cron, :next_at, 'scheduled', :kind,
        :corrects_policy_id, :author_account_id)
RETURNING id, public_id::text;

-- name: get_policy(public_id)^
SELECT p.id, p.public_id::text, p.title, p.body_md, p.links, p.trades, p.area_ids, p.filters, p.send_at, p.cron,
       p.next_at, p.last_sent_at, p.status, p.kind, p.created_at, p.updated_at, p.cancelled_at,
       (SELECT public_id::text FROM policy c WHERE c.id = p.corrects_policy_id) AS corrects,
       (SELECT coalesce(array_agg(a.path ORDER BY a.path), '{}') FROM area a WHERE a.id = ANY(p.area_ids)) AS area_paths,
       (SELECT coalesce(array_agg(a.code ORDER BY a.path), '{}') FROM area a WHERE a.id = ANY(p.area_ids)) AS area_codes,
       (SELECT login FROM account WHERE id = p.author_account_id) AS author
FROM policy p
WHERE p.public_id::text = :public_id AND p.reminder IS NULL;

-- name: lock_policy(id)^
SELECT id, status, last_sent_at FROM policy WHERE id = :id FOR UPDATE;

-- name: update_policy(id, title, body_md, links, trades, area_ids, filters, send_at, cron, next_at)!
UPDATE policy SET title = :title, body_md = :body_md, links = :links, trades = :trades, area_ids = :area_ids,
                  filters = :filters, send_at = :send_at, cron = :cron, next_at = :next_at, updated_at = now()
WHERE id = :id;

-- name: cancel_policy(id)!
UPDATE policy SET status = 'cancelled', next_at = NULL, cancelled_at = now(), updated_at = now() WHERE id = :id;

-- name: list_policies(prefix, limit, before)
-- Policies whose every target area lies inside the caller's scope (all of them for a NULL prefix),
-- newest first.
SELECT p.public_id::text, p.title, p.kind, p.status, p.trades, p.send_at, p.cron, p.next_at, p.last_sent_at,
       p.created_at,
       (SELECT count(*) FROM delivery d WHERE d.policy_id = p.id AND d.channel = 'inbox') AS targeted,
       (SELECT count(*) FROM delivery d WHERE d.policy_id = p.id AND d.channel = 'inbox'
                                          AND d.read_at IS NOT NULL) AS read
FROM policy p
WHERE p.reminder IS NULL
  AND (:prefix::text IS NULL OR NOT EXISTS (
        SELECT 1 FROM area a WHERE a.id = ANY(p.area_ids)
          AND NOT (a.path = :prefix OR a.path LIKE :prefix || '.%')))
  AND (:before::bigint IS NULL OR p.id < :before)
ORDER BY p.id DESC
LIMIT :limit;

-- name: claim_due_policy(now)^
-- One policy whose time has come, locked so that no other instance sends it at the same time.
SELECT id, public_id::text, cron, next_at, kind, trades, area_ids, filters, corrects_policy_id
FROM policy
WHERE status = 'scheduled' AND next_at <= :now
ORDER BY next_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: materialize_audience(policy_id, occurrence, trades, area_ids, filters, today)$
-- The whole audience in one statement: a delivery per shop for the inbox and for every enabled
-- channel. The unique key makes a second attempt at the same occurrence add nothing.
WITH ins AS (
    INSERT INTO delivery (policy_id, shop_id, occurrence, channel)
    SELECT :policy_id, a.shop_id, :occurrence, c.channel
    FROM policy_audience(:trades::text[], :area_ids::bigint[], :filters::jsonb, :today::date) a
    CROSS JOIN (SELECT 'inbox' AS channel UNION ALL SELECT name FROM delivery_channel WHERE enabled AND kind = 'gateway') c
    ON CONFLICT (policy_id, shop_id, occurrence, channel) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins;

-- name: materialize_correction(policy_id, occurrence, corrected_id)$
-- A correction goes to every shop the corrected policy reached, whatever its audience is today.
WITH ins AS (
    INSERT INTO delivery (policy_id, shop_id, occurrence, channel)
    SELECT :policy_id, x.shop_id, :occurrence, c.channel
    FROM (SELECT DISTINCT shop_id FROM delivery WHERE policy_id = :corrected_id AND channel = 'inbox') x
    CROSS JOIN (SELECT 'inbox' AS channel UNION ALL SELECT name FROM delivery_channel WHERE enabled AND kind = 'gateway') c
    ON CONFLICT (policy_id, shop_id, occurrence, channel) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins;

-- name: mark_policy_sent(id, next_at)!
UPDATE policy SET last_sent_at = now(), next_at = :next_at,
                  status = CASE WHEN :next_at::timestamptz IS NULL THEN 'sent' ELSE 'scheduled' END,
                  updated_at = now()
WHERE id = :id;

-- name: deliver_inbox(batch)$
-- The inbox channel: a batch of pending rows delivered in one statement (nothing leaves the
-- database, so claiming and delivering are one transaction and cannot happen twice).
WITH done AS (
    UPDATE delivery SET status = 'delivered', delivered_at = now(), attempts = attempts + 1
    WHERE id IN (SELECT id FROM delivery
                 WHERE channel = 'inbox' AND status IN ('pending', 'failed') AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: claim_channel_deliveries(batch, lease_seconds)
-- Outbound channels: claim a batch by leasing it (the lease commits with this statement). A worker
-- that dies before recording the outcome leaves the row to be claimed again when the lease ends;
-- the receiver sees the same Idempotency-Key. `attempts` is the fencing token of the claim.
UPDATE delivery d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease_seconds)
FROM policy p, shop s, delivery_channel c
WHERE d.id IN (SELECT id FROM delivery
               WHERE channel <> 'inbox' AND status IN ('pending', 'failed') AND next_attempt_at <= now()
                 -- a disabled (or removed) channel's rows wait, and never hold up the others
                 AND channel IN (SELECT name FROM delivery_channel WHERE enabled)
               ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED)
  AND p.id = d.policy_id AND s.id = d.shop_id AND c.name = d.channel
RETURNING d.id, d.attempts, d.channel, d.occurrence, d.detail, c.url, c.secret, c.allow_private,
          c.kind AS channel_kind, p.public_id::text AS policy_id, p.title, p.kind, p.reminder,
          s.code AS shop_code, s.name AS shop_name, s.owner_phone;

-- name: record_channel_outcomes(ids, attempts, delivered, errors, retry_in, max_attempts)!
-- The outcomes of one batch; a row re-claimed meanwhile (its attempts moved on) is left to its
-- new holder.
UPDATE delivery d SET
    status = CASE WHEN o.delivered THEN 'delivered'
                  WHEN d.attempts >= :max_attempts THEN 'dead' ELSE 'failed' END,
    delivered_at = CASE WHEN o.delivered THEN now() END,
    last_error = o.error,
    next_attempt_at = now() + make_interval(secs => o.retry_in)
FROM unnest(:ids::bigint[], :attempts::int[], :delivered::bool[], :errors::text[], :retry_in::float8[])
     AS o(id, attempts, delivered, error, retry_in)
WHERE d.id = o.id AND d.attempts = o.attempts AND d.status IN ('pending', 'failed');

-- name: ensure_reminder(reminder, title, body_md)$
INSERT INTO policy (title, body_md, area_ids, status, kind, reminder)
VALUES (:title, :body_md, '{}', 'sent', 'reminder', :reminder)
ON CONFLICT (reminder) DO UPDATE SET title = excluded.title, body_md = excluded.body_md
RETURNING id;

-- name: materialize_reminders(policy_id, reminder, today)$
-- Each reminder once per licence, inspection or certificate and date: the occurrence is the date
-- it is about, so running the job again (or in several instances) adds nothing.
WITH due AS (
    SELECT l.shop_id, l.valid_to AS on_date,
           jsonb_build_object('kind', l.kind, 'number', l.number, 'valid_to', l.valid_to) AS detail
    FROM licence l JOIN shop s ON s.id = l.shop_id
    WHERE :reminder IN ('licence_30', 'licence_7', 'licence_expired')
      AND l.status = 'active' AND s.status <> 'closed'
      AND CASE :reminder
            WHEN 'licence_30' THEN l.valid_to BETWEEN :today::date + 8 AND :today::date + 30
            WHEN 'licence_7' THEN l.valid_to BETWEEN :today::date AND :today::date + 7
            ELSE l.valid_to BETWEEN :today::date - 30 AND :today::date - 1 END
      -- renewed: a licence of the same kind runs on past this one
      AND NOT EXISTS (SELECT 1 FROM licence n WHERE n.shop_id = l.shop_id AND n.kind = l.kind
                      AND n.status = 'active' AND n.valid_to > l.valid_to)
    UNION ALL
    SELECT i.shop_id, i.rectify_due,
           jsonb_build_object('inspected_on', i.inspected_on, 'rectify_due', i.rectify_due, 'result', i.result)
    FROM inspection i JOIN shop s ON s.id = i.shop_id
    WHERE :reminder = 'rectify_due' AND i.result IN ('rectify', 'fail') AND s.status <> 'closed'
      AND i.rectify_due BETWEEN :today::date AND :today::date + 3
      AND NOT EXISTS (SELECT 1 FROM inspection f WHERE f.shop_id = i.shop_id AND f.result = 'pass'
                      AND f.inspected_on >= i.inspected_on AND f.id <> i.id)
    UNION ALL
    SELECT x.shop_id, x.health_cert_valid_to,
           jsonb_build_object('staff', x.name, 'health_cert_valid_to', x.health_cert_valid_to)
    FROM staff x JOIN shop s ON s.id = x.shop_id
    WHERE :reminder = 'health_cert' AND x.active AND x.cert_status = 'verified' AND s.status <> 'closed'
      AND x.health_cert_valid_to BETWEEN :today::date AND :today::date + 30
),
ins AS (
    INSERT INTO delivery (policy_id, shop_id, occurrence, channel, detail)
    SELECT DISTINCT ON (due.shop_id, due.on_date, c.channel)
           :policy_id, due.shop_id, due.on_date::timestamptz, c.channel, due.detail
    FROM due
    CROSS JOIN (SELECT 'inbox' AS channel UNION ALL SELECT name FROM delivery_channel WHERE enabled AND kind = 'gateway') c
    ON CONFLICT (policy_id, shop_id, occurrence, channel) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins;

-- name: list_inbox(shop_ids, scope, unread_only, limit, before)
-- A merchant's inbox: what was delivered to their shops. "shop" scope is what concerns one shop
-- in particular (reminders, policies narrowed by a filter); "trade" is what went to a whole trade.
-- `before` is the public id of the last item of the page before (one of the caller's own; another
-- id, or none that exists, pages from nothing: an empty page).
SELECT d.public_id::text AS id, p.public_id::text AS policy_id, p.title, p.body_md, p.links, p.kind, p.reminder, d.detail,
       s.code AS shop_code, s.name AS shop_name, d.delivered_at, d.read_at,
       CASE WHEN p.kind = 'reminder' OR p.filters <> '{}' THEN 'shop' ELSE 'trade' END AS scope,
       (SELECT public_id::text FROM policy c WHERE c.id = p.corrects_policy_id) AS corrects
FROM delivery d JOIN policy p ON p.id = d.policy_id JOIN shop s ON s.id = d.shop_id
WHERE d.shop_id = ANY(:shop_ids::bigint[]) AND d.channel = 'inbox' AND d.status = 'delivered'
  AND (:scope::text IS NULL OR :scope = CASE WHEN p.kind = 'reminder' OR p.filters <> '{}' THEN 'shop' ELSE 'trade' END)
  AND (NOT :unread_only OR d.read_at IS NULL)
  AND (:before::uuid IS NULL OR d.id < (SELECT b.id FROM delivery b
                                         WHERE b.public_id = :before::uuid AND b.channel = 'inbox'
                                           AND b.shop_id = ANY(:shop_ids::bigint[])))
ORDER BY d.id DESC
LIMIT :limit;

-- name: count_unread(shop_ids)$
SELECT count(*) FROM delivery
WHERE shop_id = ANY(:shop_ids::bigint[]) AND channel = 'inbox' AND status = 'delivered' AND read_at IS NULL;

-- name: read_inbox_item(public_id, shop_ids, account_id)^
-- Open one item (by its public id): the first opening is the read receipt.
WITH hit AS (
    UPDATE delivery SET read_at = now(), read_by_account_id = :account_id
    WHERE public_id = :public_id::uuid AND shop_id = ANY(:shop_ids::bigint[]) AND channel = 'inbox' AND status = 'delivered'
      AND read_at IS NULL
    RETURNING id
)
SELECT d.public_id::text AS id, p.public_id::text AS policy_id, p.title, p.body_md, p.links, p.kind, p.reminder, d.detail,
       s.code AS shop_code, s.name AS shop_name, d.delivered_at, coalesce(d.read_at, now()) AS read_at,
       CASE WHEN p.kind = 'reminder' OR p.filters <> '{}' THEN 'shop' ELSE 'trade' END AS scope,
       (SELECT public_id::text FROM policy c WHERE c.id = p.corrects_policy_id) AS corrects
FROM delivery d JOIN policy p ON p.id = d.policy_id JOIN shop s ON s.id = d.shop_id
WHERE d.public_id = :public_id::uuid AND d.shop_id = ANY(:shop_ids::bigint[]) AND d.channel = 'inbox'
  AND d.status = 'delivered';

-- name: policy_reach(policy_id)^
SELECT count(DISTINCT shop_id) FILTER (WHERE channel = 'inbox') AS targeted,
       count(*) FILTER (WHERE channel = 'inbox' AND status = 'delivered') AS delivered,
       count(*) FILTER (WHERE channel = 'inbox' AND read_at IS NOT NULL) AS read,
       count(*) FILTER (WHERE channel <> 'inbox' AND status = 'delivered') AS channel_delivered,
       count(*) FILTER (WHERE channel <> 'inbox' AND status = 'dead') AS failed,
       count(*) FILTER (WHERE status IN ('pending', 'failed')) AS waiting
FROM delivery WHERE policy_id = :policy_id;

-- name: list_unread_after(policy_id, days)
-- Shops that have had the policy for `days` days or more and not read it, by area, so that a grid
-- worker can follow up in person.
SELECT a.code AS area_code, a.name AS area_name, s.code AS shop_code, s.name AS shop_name, s.address, s.phone,
       d.delivered_at
FROM delivery d JOIN shop s ON s.id = d.shop_id JOIN area a ON a.id = s.area_id
WHERE d.policy_id = :policy_id AND d.channel = 'inbox' AND d.status = 'delivered' AND d.read_at IS NULL
  AND d.delivered_at <= now() - make_interval(days => :days)
ORDER BY a.path, s.code;

-- name: upsert_channel(name, url, secret, allow_private, enabled)!
INSERT INTO delivery_channel (name, url, secret, allow_private, enabled)
VALUES (:name, :url, :secret, :allow_private, :enabled)
ON CONFLICT (name) DO UPDATE SET url = excluded.url, secret = excluded.secret,
    allow_private = excluded.allow_private, enabled = excluded.enabled;

-- name: get_known_trades(codes)$
SELECT coalesce(array_agg(code), '{}') FROM trade WHERE code = ANY(:codes::text[]);

-- name: list_areas_in_scope(prefix)
-- The areas a manager may target, for the form (every area for a NULL prefix), at most 500.
SELECT code, name, level, path FROM area
WHERE :prefix::text IS NULL OR path = :prefix OR path LIKE :prefix || '.%'
ORDER BY path LIMIT 500;

-- name: list_trades()
SELECT code, name, name_en FROM trade ORDER BY code;

-- name: list_channel_status()
SELECT c.name, c.url, c.enabled,
       count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(d.id) FILTER (WHERE d.status IN ('pending', 'failed')) AS waiting,
       count(d.id) FILTER (WHERE d.status = 'dead') AS dead,
       (array_agg(d.last_error ORDER BY d.id DESC) FILTER (WHERE d.last_error IS NOT NULL))[1] AS last_error
FROM delivery_channel c LEFT JOIN delivery d ON d.channel = c.name
GROUP BY c.name ORDER BY c.name;

-- name: add_case_reminders(policy_id, shop_ids, occurrences, details)$
-- A reminder per overdue rectification case, to the shop's inbox and channels, once per case and due time.
WITH ins AS (
    INSERT INTO delivery (policy_id, shop_id, occurrence, channel, detail)
    SELECT :policy_id, x.shop_id, x.occurrence, c.channel, x.detail
    FROM unnest(:shop_ids::bigint[], :occurrences::timestamptz[], :details::jsonb[]) AS x(shop_id, occurrence, detail)
    CROSS JOIN (SELECT 'inbox' AS channel UNION ALL SELECT name FROM delivery_channel WHERE enabled AND kind = 'gateway') c
    ON CONFLICT (policy_id, shop_id, occurrence, channel) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins;

-- name: dispatch_shop_events(batch)^
-- Fan the oldest events out to every enabled subscription that asked for them (by event, shop,
-- trade, area and below), as deliveries of the event's policy row; the events are consumed in
-- the same statement, so each is fanned out once.
WITH ev AS (
    DELETE FROM shop_event WHERE id IN (
        SELECT id FROM shop_event ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING id, shop_id, kind, at, detail
),
ins AS (
    INSERT INTO delivery (policy_id, shop_id, occurrence, channel, detail)
    SELECT p.id, ev.shop_id, ev.at, c.name, ev.detail || jsonb_build_object('event', ev.kind, 'at', ev.at)
    FROM ev
    JOIN policy p ON p.reminder = 'event:' || ev.kind
    JOIN shop s ON s.id = ev.shop_id JOIN area a ON a.id = s.area_id
    -- a subscription hears of what happens after it was made, not before
    JOIN delivery_channel c ON c.kind = 'subscription' AND c.enabled AND ev.kind = ANY(c.events)
        AND c.created_at <= ev.at
        AND (c.shop_id IS NULL OR c.shop_id = ev.shop_id)
        AND (c.trade IS NULL OR c.trade = s.trade)
        AND (c.area_path IS NULL OR a.path = c.area_path OR a.path LIKE c.area_path || '.%')
    ON CONFLICT (policy_id, shop_id, occurrence, channel) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev) AS events, (SELECT count(*) FROM ins) AS deliveries;

-- name: create_subscription(name, url, secret, allow_private, events, area_path, trade, shop_id, created_by)!
INSERT INTO delivery_channel (name, url, secret, allow_private, kind, events, area_path, trade, shop_id, created_by)
VALUES (:name, :url, :secret, :allow_private, 'subscription', :events, :area_path, :trade, :shop_id, :created_by);

-- name: list_subscriptions(prefix)
SELECT c.name, c.url, c.events, c.area_path, a.code AS area_code, c.trade, s.code AS shop_code, c.enabled,
       c.created_at,
       (SELECT count(*) FROM delivery d WHERE d.channel = c.name AND d.status = 'delivered') AS delivered,
       (SELECT count(*) FROM delivery d WHERE d.channel = c.name AND d.status IN ('pending', 'failed')) AS waiting,
       (SELECT count(*) FROM delivery d WHERE d.channel = c.name AND d.status = 'dead') AS dead
FROM delivery_channel c LEFT JOIN area a ON a.path = c.area_path LEFT JOIN shop s ON s.id = c.shop_id
WHERE c.kind = 'subscription'
  AND (:prefix::text IS NULL OR c.area_path = :prefix OR c.area_path LIKE :prefix || '.%')
ORDER BY c.created_at DESC;

-- name: disable_subscription(name, prefix)$
WITH hit AS (
    UPDATE delivery_channel SET enabled = false
    WHERE name = :name AND kind = 'subscription'
      AND (:prefix::text IS NULL OR area_path = :prefix OR area_path LIKE :prefix || '.%')
    RETURNING 1
)
SELECT count(*) FROM hit;

-- name: add_shop_event(shop_id, kind, detail)!
INSERT INTO shop_event (shop_id, kind, detail) VALUES (:shop_id, :kind, :detail);

-- name: try_lock_reminders(key)$
-- one instance at a time adds the day's reminders (the others, started at the same moment, would
-- only repeat the work: each reminder is added once anyway)
SELECT pg_try_advisory_xact_lock(:key);
