-- Closed-loop cases (merchant_code/cases.py).

-- name: lock_case_key(key)!
-- Two reports of the same shop and category at once: one opens the case, the other joins it.
SELECT pg_advisory_xact_lock(hashtextextended(:key, 7));

-- name: find_open_duplicate(shop_id, category, days)^
SELECT id, public_id FROM case_file
WHERE shop_id = :shop_id AND category = :category AND status NOT IN ('resolved', 'closed')
  AND opened_at >= now() - make_interval(days => :days)
ORDER BY opened_at DESC LIMIT 1;

-- name: get_category(code)^
SELECT code, name, name_en, sla_hours, public FROM case_category WHERE code = :code;

-- name: list_categories(public_only)
SELECT code, name, name_en, sla_hours, public FROM case_category
WHERE NOT :public_only OR public ORDER BY code;

-- name: create_case(tracking_number, shop_id, source, category, description, reporter_name, reporter_phone, reporter_email, photo_id, inspection_id, licence_id, due, via, actor, lat, lon)^
-- The case's own number is the column's default (new_case_number()); the tracking number is the
-- first reporter's.
INSERT INTO case_file (tracking_number, shop_id, source, category, department, description, reporter_name,
                       reporter_phone, reporter_email, photo_id, inspection_id, licence_id, sla_due_at, via,
                       created_by_account_id, area_path, lat, lon)
SELECT :tracking_number, s.id, :source, :category, case_department(s.id, :category), :description, :reporter_name,
       :reporter_phone, :reporter_email, :photo_id, :inspection_id, :licence_id,
       coalesce(:due::timestamptz, now() + make_interval(hours => (SELECT sla_hours FROM case_category WHERE code = :category))),
       :via, :actor, a.path, coalesce(:lat::float8, s.lat), coalesce(:lon::float8, s.lon)
FROM shop s JOIN area a ON a.id = s.area_id
WHERE s.id = :shop_id
RETURNING id, public_id, request_id, department, sla_due_at;

-- name: add_report(public_id, case_id, description, reporter_name, reporter_phone, reporter_email, photo_id, via)$
WITH r AS (
    INSERT INTO case_report (public_id, case_id, description, reporter_name, reporter_phone, reporter_email, photo_id, via)
    VALUES (:public_id, :case_id, :description, :reporter_name, :reporter_phone, :reporter_email, :photo_id, :via)
    RETURNING request_id
),
counted AS (
    UPDATE case_file SET reported_count = reported_count + 1, updated_at = now() WHERE id = :case_id
)
SELECT request_id FROM r;

-- name: add_event(case_id, actor, kind, from_status, to_status, note, photo_id, public)!
INSERT INTO case_event (case_id, actor_account_id, kind, from_status, to_status, note, photo_id, public)
VALUES (:case_id, :actor, :kind, :from_status, :to_status, :note, :photo_id, :public);

-- name: add_signal(key, case_id)!
INSERT INTO case_signal (key, case_id) VALUES (:key, :case_id) ON CONFLICT (key) DO NOTHING;

-- name: get_case(public_id)^
SELECT c.*, s.code AS shop_code, s.name AS shop_name, s.trade, s.address AS shop_address,
       d.name AS department_name, d.name_en AS department_name_en,
       k.name AS category_name, k.name_en AS category_name_en,
       (SELECT login FROM account WHERE id = c.assignee_account_id) AS assignee,
       (SELECT display_name FROM account WHERE id = c.assignee_account_id) AS assignee_name,
       (SELECT login FROM account WHERE id = c.escalated_to_account_id) AS escalated_to,
       i.inspected_on AS inspection_on
FROM case_file c LEFT JOIN shop s ON s.id = c.shop_id LEFT JOIN department d ON d.code = c.department
     LEFT JOIN case_category k ON k.code = c.category LEFT JOIN inspection i ON i.id = c.inspection_id
WHERE c.public_id = :public_id;

-- name: lock_case(id)^
SELECT id, status, assignee_account_id, resolved_at, closed_at, source, inspection_id, shop_id, opened_at, area_path
FROM case_file WHERE id = :id FOR UPDATE;

-- name: set_case_status(id, status, assignee)!
UPDATE case_file SET
    status = :status,
    assignee_account_id = coalesce(:assignee::bigint, assignee_account_id),
    resolved_at = CASE WHEN :status = 'resolved' THEN now() WHEN :status IN ('open', 'assigned') THEN NULL ELSE resolved_at END,
    closed_at = CASE WHEN :status = 'closed' THEN now() WHEN :status IN ('open', 'assigned') THEN NULL ELSE closed_at END,
    reopened_count = reopened_count + CASE WHEN status IN ('resolved', 'closed') AND :status IN ('open', 'assigned') THEN 1 ELSE 0 END,
    updated_at = now()
WHERE id = :id;

-- name: has_passing_followup(shop_id, after)$
-- A rectification case closes only once an inspection after the one that opened it has passed.
SELECT EXISTS (SELECT 1 FROM inspection WHERE shop_id = :shop_id AND result = 'pass' AND inspected_on > :after::date);

-- name: get_staff_account(login)^
SELECT a.id, a.role, a.department, a.disabled_at, ar.path AS area_path
FROM account a LEFT JOIN area ar ON ar.id = a.area_id WHERE a.login = :login;

-- name: list_case_events(case_id, public_only)
SELECT e.at, e.kind, e.from_status, e.to_status, e.note, e.public,
       a.login AS actor, a.display_name AS actor_name, a.role AS actor_role,
       (SELECT public_id::text FROM upload WHERE id = e.photo_id) AS photo
FROM case_event e LEFT JOIN account a ON a.id = e.actor_account_id
WHERE e.case_id = :case_id AND (NOT :public_only OR e.public)
ORDER BY e.at, e.id;

-- name: list_cases(prefix, assignee, status, department, overdue, source, category, shop_ids, limit, before)
-- Cases for a list: the caller's area (NULL: all), narrowed by the filters; newest first.
-- `before`: the number of the last case of the page before (none that exists: an empty page).
SELECT c.id, c.public_id, c.source, c.category, c.department, c.status, c.overdue, c.opened_at, c.sla_due_at,
       c.reported_count, s.code AS shop_code, s.name AS shop_name,
       (SELECT login FROM account WHERE id = c.assignee_account_id) AS assignee
FROM case_file c LEFT JOIN shop s ON s.id = c.shop_id
WHERE (:prefix::text IS NULL OR c.area_path = :prefix OR c.area_path LIKE :prefix || '.%')
  AND (:assignee::bigint IS NULL OR c.assignee_account_id = :assignee)
  AND (:status::text IS NULL OR c.status = :status)
  AND (:department::text IS NULL OR c.department = :department)
  AND (:overdue::bool IS NULL OR c.overdue = :overdue)
  AND (:source::text IS NULL OR c.source = :source)
  AND (:category::text IS NULL OR c.category = :category)
  AND (:shop_ids::bigint[] IS NULL OR c.shop_id = ANY(:shop_ids::bigint[]))
  AND (:before::text IS NULL OR c.id < (SELECT b.id FROM case_file b WHERE b.public_id = upper(:before)))
ORDER BY c.id DESC
LIMIT :limit;

-- name: escalate_overdue(now)
-- Cases past their due time, once each: marked overdue, handed to the manager of their department
-- whose area covers the case (the nearest; any manager of the area when the department has none),
-- with an event in their trail.
WITH due AS (
    SELECT c.id FROM case_file c
    WHERE c.status NOT IN ('resolved', 'closed') AND NOT c.overdue AND c.sla_due_at <= :now
    ORDER BY c.sla_due_at LIMIT 5000
    FOR UPDATE SKIP LOCKED
),
marked AS (
    UPDATE case_file c SET overdue = true, escalated_at = :now, updated_at = now(),
        escalated_to_account_id = (
            SELECT a.id FROM account a JOIN area ar ON ar.id = a.area_id
            WHERE a.role = 'manager' AND a.disabled_at IS NULL
              AND (c.area_path = ar.path OR c.area_path LIKE ar.path || '.%')
            ORDER BY (a.department IS NOT DISTINCT FROM c.department) DESC, length(ar.path) DESC, a.id
            LIMIT 1)
    FROM due WHERE c.id = due.id
    RETURNING c.id, c.shop_id, c.source, c.sla_due_at, c.public_id, c.escalated_to_account_id, c.category
),
events AS (
    INSERT INTO case_event (case_id, kind, note, public)
    SELECT id, 'escalated', 'past its due time: escalated to the department''s manager', false FROM marked
)
SELECT * FROM marked;

-- name: list_inspection_signals(since, limit)
SELECT i.id, i.shop_id, i.result, i.rectify_due, i.inspected_on, i.summary
FROM inspection i JOIN shop s ON s.id = i.shop_id
WHERE i.result IN ('rectify', 'fail') AND i.inspected_on >= :since AND s.status <> 'closed'
  AND NOT EXISTS (SELECT 1 FROM case_signal g WHERE g.key = 'inspection:' || i.id)
ORDER BY i.inspected_on LIMIT :limit;

-- name: list_expiry_signals(today, limit)
SELECT l.id, l.shop_id, l.kind, l.number, l.valid_to
FROM licence l JOIN shop s ON s.id = l.shop_id
WHERE l.status = 'active' AND l.valid_to BETWEEN :today::date - 30 AND :today::date - 1 AND s.status <> 'closed'
  AND NOT EXISTS (SELECT 1 FROM licence n WHERE n.shop_id = l.shop_id AND n.kind = l.kind
                  AND n.status = 'active' AND n.valid_to > l.valid_to)
  AND NOT EXISTS (SELECT 1 FROM case_signal g WHERE g.key = 'licence:' || l.id || ':' || l.valid_to)
ORDER BY l.valid_to LIMIT :limit;

-- name: list_feed_signals(since, pattern, limit)
-- Reviews (2 stars or fewer) and news items about a shop that use food-safety words.
SELECT 'review:' || r.id AS key, r.shop_id, left(r.body, 500) AS text, r.posted_at AS at
FROM review r
WHERE r.posted_at >= :since AND r.deleted_at IS NULL AND r.rating <= 2 AND r.body ~* :pattern
  AND NOT EXISTS (SELECT 1 FROM case_signal g WHERE g.key = 'review:' || r.id)
UNION ALL
SELECT 'sentiment:' || x.id, x.shop_id, left(x.title || ' ' || coalesce(x.summary, ''), 500), x.published_at
FROM sentiment_item x
WHERE x.published_at >= :since AND x.shop_id IS NOT NULL AND coalesce(x.match_confidence, 1) >= 0.5
  AND (x.title ~* :pattern OR x.summary ~* :pattern)
  AND NOT EXISTS (SELECT 1 FROM case_signal g WHERE g.key = 'sentiment:' || x.id)
ORDER BY 4 LIMIT :limit;

-- name: list_review_drop_signals(week, limit)
-- Shops whose recent review average fell by half a star or more (the profile's risk reason),
-- once a week each.
SELECT p.shop_id, r.reason
FROM shop_profile p CROSS JOIN LATERAL jsonb_array_elements(p.risk_reasons) r(reason)
WHERE r.reason ->> 'code' = 'reviews_falling'
  AND NOT EXISTS (SELECT 1 FROM case_signal g WHERE g.key = 'drop:' || p.shop_id || ':' || :week)
LIMIT :limit;

-- name: list_routes(prefix)
SELECT r.public_id::text AS id, a.code AS area_code, r.trade, r.category, r.department, r.updated_at
FROM case_route r LEFT JOIN area a ON a.id = r.area_id
WHERE :prefix::text IS NULL OR r.area_id IS NULL OR a.path = :prefix OR a.path LIKE :prefix || '.%'
ORDER BY a.path NULLS FIRST, r.category NULLS FIRST, r.trade NULLS FIRST;

-- name: upsert_route(area_id, trade, category, department, actor)$
INSERT INTO case_route (area_id, trade, category, department, updated_by)
VALUES (:area_id, :trade, :category, :department, :actor)
ON CONFLICT (coalesce(area_id, 0), coalesce(trade, ''), coalesce(category, ''))
DO UPDATE SET department = excluded.department, updated_by = excluded.updated_by, updated_at = now()
RETURNING public_id::text;

-- name: delete_route(public_id, prefix)$
WITH gone AS (
    DELETE FROM case_route r USING area a
    WHERE r.public_id = :public_id::uuid AND a.id = r.area_id AND (:prefix::text IS NULL OR a.path = :prefix OR a.path LIKE :prefix || '.%')
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: list_departments()
SELECT code, name, name_en FROM department ORDER BY code;

-- name: get_route_department(shop_id, category)$
SELECT case_department(:shop_id, :category);

-- name: get_case_number_for_tracking(number)^
-- The case a reporter's tracking number follows: the first reporter's, or a joined report's.
SELECT public_id, false AS joined FROM case_file WHERE tracking_number = :number
UNION ALL
SELECT c.public_id, true FROM case_report r JOIN case_file c ON c.id = r.case_id WHERE r.public_id = :number
LIMIT 1;

-- name: route_codes_known(department, trade, category)^
SELECT EXISTS (SELECT 1 FROM department WHERE code = :department) AS department,
       :trade::text IS NULL OR EXISTS (SELECT 1 FROM trade WHERE code = :trade) AS trade,
       :category::text IS NULL OR EXISTS (SELECT 1 FROM case_category WHERE code = :category) AS category;

-- name: list_assignable_staff(area_path)
-- Inspectors and managers whose area covers this one: who a case here may be assigned to.
SELECT a.login, a.display_name, a.role, a.department
FROM account a JOIN area ar ON ar.id = a.area_id
WHERE a.role IN ('inspector', 'manager') AND a.disabled_at IS NULL
  AND (:area_path = ar.path OR :area_path LIKE ar.path || '.%')
ORDER BY a.role, a.login LIMIT 200;
