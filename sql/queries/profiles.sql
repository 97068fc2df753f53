-- name: rebuild_profiles(ids, today)$
-- One statement for any number of shops: every part of the portrait is aggregated per shop from
-- its own table (each read by its shop_id index), then the citizen document and the private parts
-- (which the merchant's and the inspector's documents lay over it when read) are built and
-- upserted with the version raised. Returns how many profiles were written. Notices are not part
-- of it: the views join them when they are made (notices.py, migration 0037).
WITH s AS (
    SELECT s.id, s.code, s.uscc, s.name, s.name_en, s.trade, t.name AS trade_name, t.name_en AS trade_name_en,
           t.food, a.code AS area_code, a.name AS area_name, a.path AS area_path, s.address, s.lat, s.lon,
           s.phone, s.opening_hours, s.status, s.status_changed_at, s.updated_at,
           s.owner_name, s.owner_phone, s.owner_id_number,
           EXISTS (SELECT 1 FROM qr_revocation r WHERE r.code = s.code) AS revoked
    FROM shop s JOIN trade t ON t.code = s.trade JOIN area a ON a.id = s.area_id
    WHERE s.id = ANY(:ids::bigint[])
),
lic_rows AS (
    SELECT l.*, CASE
               WHEN l.status = 'pending_verification' THEN 'pending'
               WHEN l.status = 'rejected' THEN 'rejected'
               WHEN l.status <> 'active' THEN 'invalid'
               WHEN l.valid_to < :today THEN 'expired'
               WHEN l.valid_to < :today + 30 THEN 'expiring'
               ELSE 'valid' END AS state
    FROM licence l WHERE l.shop_id = ANY(:ids::bigint[])
),
-- what counts: per kind, the verified licence that is best (in force first, then latest end)
lic_best AS (
    SELECT DISTINCT ON (shop_id, kind) * FROM lic_rows
    WHERE status NOT IN ('pending_verification', 'rejected')
    ORDER BY shop_id, kind, (status = 'active') DESC, valid_to DESC NULLS FIRST, id DESC
),
lic AS (
    SELECT b.shop_id,
           jsonb_agg(jsonb_build_object('kind', b.kind, 'state', b.state, 'valid_to', b.valid_to)
                     ORDER BY b.kind) AS public_list,
           jsonb_agg(jsonb_build_object('kind', b.kind, 'state', b.state, 'number', b.number,
                     'issuing_body', b.issuing_body, 'valid_from', b.valid_from, 'valid_to', b.valid_to)
                     ORDER BY b.kind) AS full_list,
           count(*) FILTER (WHERE b.state = 'expired') AS expired,
           count(*) FILTER (WHERE b.state = 'expiring') AS expiring,
           count(*) FILTER (WHERE b.state = 'invalid') AS invalid
    FROM lic_best b GROUP BY b.shop_id
),
lic_sub AS (
    SELECT shop_id,
           jsonb_agg(jsonb_build_object('id', public_id, 'kind', kind, 'number', number,
                     'issuing_body', issuing_body, 'valid_from', valid_from, 'valid_to', valid_to,
                     'state', state, 'review_note', review_note, 'has_image', image_id IS NOT NULL)
                     ORDER BY id DESC) FILTER (WHERE status IN ('pending_verification', 'rejected')) AS submissions,
           max(greatest(fetched_at, updated_at)) AS fresh
    FROM lic_rows GROUP BY shop_id
),
insp_rows AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.shop_id ORDER BY i.inspected_on DESC, i.id DESC) AS rn
    FROM inspection i WHERE i.shop_id = ANY(:ids::bigint[])
),
insp AS (
    SELECT r.shop_id,
           jsonb_agg(jsonb_build_object(
               'id', r.public_id, 'inspected_on', r.inspected_on, 'kind', r.kind, 'result', r.result,
               'grade', r.grade, 'score', r.score, 'score_scale', r.score_scale, 'rectify_due', r.rectify_due,
               'summary', r.summary,
               'merchant_reply', r.merchant_reply,
               'violations', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                  'code', v.code, 'description', v.description,
                                  'description_en', vc.description_en, 'critical', v.critical,
                                  'corrected', v.corrected) ORDER BY v.critical DESC NULLS LAST, v.code), '[]')
                              FROM violation v LEFT JOIN violation_code vc ON vc.code = v.code
                              WHERE v.inspection_id = r.id))
               ORDER BY r.rn) AS recent,
           (array_agg(r.grade ORDER BY r.rn) FILTER (WHERE r.grade IS NOT NULL))[1] AS grade,
           (array_agg(r.inspected_on ORDER BY r.rn) FILTER (WHERE r.grade IS NOT NULL))[1] AS grade_date,
           max(r.inspected_on) AS last_on,
           (array_agg(r.result ORDER BY r.rn))[1] AS last_result,
           (array_agg(r.rectify_due ORDER BY r.rn))[1] AS last_rectify_due,
           count(*) FILTER (WHERE r.result IN ('rectify', 'fail') AND r.inspected_on >= :today - 365) AS bad_year,
           max(greatest(r.fetched_at, r.created_at, r.merchant_replied_at)) AS fresh
    FROM insp_rows r WHERE r.rn <= 10 GROUP BY r.shop_id
),
rev AS (
    SELECT x.shop_id,
           round(avg(x.rating), 1)::float8 AS rating,
           count(*) AS review_count,
           avg(x.rating) FILTER (WHERE x.posted_at >= :today - 90) AS recent_avg,
           count(*) FILTER (WHERE x.posted_at >= :today - 90) AS recent_count,
           avg(x.rating) FILTER (WHERE x.posted_at < :today - 90) AS older_avg,
           (jsonb_agg(jsonb_build_object('rating', x.rating, 'body', x.body, 'author', x.author_alias,
                                         'posted_at', x.posted_at) ORDER BY x.posted_at DESC)
              FILTER (WHERE x.body IS NOT NULL)) AS recent_all,
           max(greatest(x.fetched_at, x.edited_at)) AS fresh
    FROM review x WHERE x.shop_id = ANY(:ids::bigint[]) AND x.deleted_at IS NULL
    GROUP BY x.shop_id
),
sen AS (
    SELECT x.shop_id,
           jsonb_agg(jsonb_build_object('title', x.title, 'url', x.url, 'published_at', x.published_at,
                     'tone', x.tone) ORDER BY x.published_at DESC NULLS LAST) AS items,
           max(x.fetched_at) AS fresh
    FROM sentiment_item x WHERE x.shop_id = ANY(:ids::bigint[]) AND coalesce(x.match_confidence, 1) >= 0.5
    GROUP BY x.shop_id
),
hon AS (
    SELECT x.shop_id,
           jsonb_agg(jsonb_build_object('title', x.title, 'issuer', x.issuer, 'awarded_on', x.awarded_on,
                     'valid_to', x.valid_to) ORDER BY x.awarded_on DESC)
             FILTER (WHERE x.verified AND (x.valid_to IS NULL OR x.valid_to >= :today)) AS verified,
           jsonb_agg(jsonb_build_object('id', x.public_id, 'title', x.title, 'issuer', x.issuer,
                     'awarded_on', x.awarded_on, 'state', CASE WHEN x.rejected_at IS NULL THEN 'pending'
                     ELSE 'rejected' END, 'review_note', x.review_note) ORDER BY x.id DESC)
             FILTER (WHERE NOT x.verified) AS submissions,
           max(x.fetched_at) AS fresh
    FROM honour x WHERE x.shop_id = ANY(:ids::bigint[]) GROUP BY x.shop_id
),
stf AS (
    SELECT x.shop_id,
           jsonb_agg(jsonb_build_object('id', x.public_id, 'name', x.name, 'role', x.role, 'phone', x.phone,
                     'id_number', x.id_number, 'health_cert_number', x.health_cert_number,
                     'health_cert_valid_to', x.health_cert_valid_to,
                     'cert_state', CASE
                         WHEN x.cert_status = 'pending_verification' THEN 'pending'
                         WHEN x.cert_status = 'rejected' THEN 'rejected'
                         WHEN x.health_cert_valid_to IS NULL OR x.health_cert_valid_to < :today THEN 'expired'
                         WHEN x.health_cert_valid_to < :today + 30 THEN 'expiring'
                         ELSE 'valid' END) ORDER BY x.id) AS people,
           count(*) AS headcount,
           count(*) FILTER (WHERE x.cert_status = 'verified' AND x.health_cert_valid_to >= :today) AS certified,
           count(*) FILTER (WHERE x.cert_status = 'verified'
                            AND (x.health_cert_valid_to IS NULL OR x.health_cert_valid_to < :today)) AS cert_expired,
           max(x.fetched_at) AS fresh
    FROM staff x WHERE x.shop_id = ANY(:ids::bigint[]) AND x.active GROUP BY x.shop_id
),
cas AS (
    SELECT x.shop_id,
           count(*) FILTER (WHERE x.status NOT IN ('resolved', 'closed')) AS open_count,
           count(*) FILTER (WHERE x.source = 'complaint' AND x.opened_at >= :today - 90) AS complaints_90d,
           jsonb_agg(jsonb_build_object('id', x.public_id, 'category', x.category, 'source', x.source,
                     'status', x.status, 'opened_at', x.opened_at, 'overdue', x.overdue)
                     ORDER BY x.opened_at DESC) FILTER (WHERE x.status NOT IN ('resolved', 'closed')) AS open_list,
           max(x.updated_at) AS fresh
    FROM case_file x WHERE x.shop_id = ANY(:ids::bigint[]) GROUP BY x.shop_id
),
risk AS (
    SELECT s.id AS shop_id, r.reasons,
           least(100, coalesce((SELECT sum((x->>'points')::int) FROM jsonb_array_elements(r.reasons) x), 0))
             AS score
    FROM s
    LEFT JOIN lic ON lic.shop_id = s.id
    LEFT JOIN insp ON insp.shop_id = s.id
    LEFT JOIN rev ON rev.shop_id = s.id
    LEFT JOIN stf ON stf.shop_id = s.id
    LEFT JOIN cas ON cas.shop_id = s.id
    CROSS JOIN LATERAL (
        SELECT coalesce(jsonb_agg(v.reason ORDER BY (v.reason->>'points')::int DESC), '[]') AS reasons
        FROM (VALUES
            (coalesce(lic.expired, 0) + coalesce(lic.invalid, 0) > 0,
             jsonb_build_object('code', 'licence_expired', 'points', 25,
                                'count', coalesce(lic.expired, 0) + coalesce(lic.invalid, 0))),
            (coalesce(lic.expiring, 0) > 0,
             jsonb_build_object('code', 'licence_expiring', 'points', 5, 'count', lic.expiring)),
            (insp.last_result = 'fail',
             jsonb_build_object('code', 'last_inspection_failed', 'points', 25, 'on', insp.last_on)),
            (insp.last_result = 'rectify',
             jsonb_build_object('code', 'last_inspection_rectify', 'points', 15, 'on', insp.last_on)),
            (insp.last_result <> 'pass' AND insp.last_rectify_due < :today,
             jsonb_build_object('code', 'rectification_overdue', 'points', 20, 'due', insp.last_rectify_due)),
            (coalesce(insp.bad_year, 0) >= 2,
             jsonb_build_object('code', 'repeated_findings', 'points', 10, 'count', insp.bad_year)),
            (coalesce(cas.complaints_90d, 0) > 0,
             jsonb_build_object('code', 'complaints', 'points', least(15, 5 * cas.complaints_90d),
                                'count', cas.complaints_90d)),
            (rev.recent_count >= 3 AND rev.older_avg - rev.recent_avg >= 0.5,
             jsonb_build_object('code', 'reviews_falling', 'points', 10,
                                'from', round(rev.older_avg, 1), 'to', round(rev.recent_avg, 1))),
            (insp.last_on IS NULL,
             jsonb_build_object('code', 'never_inspected', 'points', 15)),
            (insp.last_on < :today - 365,
             jsonb_build_object('code', 'not_inspected_for_a_year', 'points', 15, 'since', insp.last_on)),
            (insp.last_on >= :today - 365 AND insp.last_on < :today - 180,
             jsonb_build_object('code', 'not_inspected_for_half_a_year', 'points', 5, 'since', insp.last_on)),
            (coalesce(stf.cert_expired, 0) > 0,
             jsonb_build_object('code', 'health_certificates_expired', 'points', 10, 'count', stf.cert_expired)),
            (insp.grade = 'C',
             jsonb_build_object('code', 'grade_c', 'points', 10))
        ) AS v(applies, reason)
        WHERE v.applies
    ) r
),
docs AS MATERIALIZED (
    SELECT s.id AS shop_id, s.code, s.area_path, insp.grade, insp.grade_date, risk.score, risk.reasons,
           jsonb_build_object(
               'code', s.code, 'name', s.name, 'name_en', s.name_en, 'trade', s.trade,
               'trade_name', s.trade_name, 'trade_name_en', s.trade_name_en, 'graded', s.food,
               'area_name', s.area_name, 'address', s.address, 'lat', s.lat, 'lon', s.lon,
               'phone', s.phone, 'opening_hours', s.opening_hours, 'status', s.status,
               'status_since', s.status_changed_at, 'revoked', s.revoked
           ) || jsonb_build_object(
               'licences', coalesce(lic.public_list, '[]'),
               'grade', insp.grade, 'grade_date', insp.grade_date,
               'inspections', coalesce((SELECT jsonb_agg(x - 'score' - 'score_scale' - 'summary') FROM jsonb_array_elements(
                                   insp.recent) WITH ORDINALITY AS e(x, n) WHERE e.n <= 5), '[]'),
               'rating', rev.rating, 'review_count', coalesce(rev.review_count, 0),
               'reviews', coalesce((SELECT jsonb_agg(x) FROM jsonb_array_elements(rev.recent_all)
                                    WITH ORDINALITY AS e(x, n) WHERE e.n <= 3), '[]'),
               'sentiment', coalesce((SELECT jsonb_agg(x) FROM jsonb_array_elements(sen.items)
                                      WITH ORDINALITY AS e(x, n) WHERE e.n <= 3), '[]'),
               'honours', coalesce(hon.verified, '[]'),
               'open_cases', coalesce(cas.open_count, 0),
               'staff_count', coalesce(stf.headcount, 0),
               'staff_certified', coalesce(stf.certified, 0),
               'freshness', jsonb_strip_nulls(jsonb_build_object(
                   'shop', s.updated_at, 'licences', lic_sub.fresh, 'inspections', insp.fresh,
                   'reviews', rev.fresh, 'sentiment', sen.fresh, 'honours', hon.fresh,
                   'staff', stf.fresh, 'cases', cas.fresh))
           ) AS citizen,
           jsonb_build_object(
               'uscc', s.uscc, 'area_code', s.area_code,
               'owner_name', s.owner_name, 'owner_phone', s.owner_phone, 'owner_id_number', s.owner_id_number,
               'licences', coalesce(lic.full_list, '[]'),
               'submissions', coalesce(lic_sub.submissions, '[]'),
               'honour_submissions', coalesce(hon.submissions, '[]'),
               'inspections', coalesce(insp.recent, '[]'),
               'staff', coalesce(stf.people, '[]'),
               'cases', coalesce(cas.open_list, '[]')
           ) AS private
    FROM s
    LEFT JOIN lic ON lic.shop_id = s.id
    LEFT JOIN lic_sub ON lic_sub.shop_id = s.id
    LEFT JOIN insp ON insp.shop_id = s.id
    LEFT JOIN rev ON rev.shop_id = s.id
    LEFT JOIN sen ON sen.shop_id = s.id
    LEFT JOIN hon ON hon.shop_id = s.id
    LEFT JOIN stf ON stf.shop_id = s.id
    LEFT JOIN cas ON cas.shop_id = s.id
    JOIN risk ON risk.shop_id = s.id
),
written AS (
    INSERT INTO shop_profile AS p (shop_id, code, area_path, citizen_doc, private_doc, grade,
                                   grade_date, risk_score, risk_reasons, freshness, rebuilt_at)
    SELECT d.shop_id, d.code, d.area_path, d.citizen, d.private,
           d.grade, d.grade_date, d.score, d.reasons, d.citizen -> 'freshness', now()
    FROM docs d
    ON CONFLICT (shop_id) DO UPDATE SET
        code = excluded.code, area_path = excluded.area_path,
        citizen_doc = excluded.citizen_doc, private_doc = excluded.private_doc,
        grade = excluded.grade, grade_date = excluded.grade_date, risk_score = excluded.risk_score,
        risk_reasons = excluded.risk_reasons, freshness = excluded.freshness, rebuilt_at = now(),
        version = p.version + 1, change_seq = nextval('profile_change_seq')
    RETURNING 1
)
SELECT count(*) FROM written;

-- name: claim_dirty_profiles(batch)$
-- Take up to `batch` queued marks off the queue, oldest first, with every other mark of the same
-- shops (a shop may be queued twice, migration 0036); rows other workers hold are skipped. The
-- caller rebuilds the shops in the same transaction, so a crash puts them back.
WITH taken AS (
    DELETE FROM profile_dirty WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM profile_dirty WHERE shop_id IN (
            SELECT shop_id FROM profile_dirty ORDER BY marked_at LIMIT :batch FOR UPDATE SKIP LOCKED)
        FOR UPDATE SKIP LOCKED))
    RETURNING shop_id
)
SELECT coalesce(array_agg(DISTINCT shop_id), '{}') FROM taken;

-- name: list_shop_id_range(after, batch)$
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM (
    SELECT id FROM shop WHERE id > :after ORDER BY id LIMIT :batch) x;

-- name: count_dirty_profiles()$
-- shops waiting for a rebuild (one may be queued twice)
SELECT count(DISTINCT shop_id) FROM profile_dirty;

-- name: clear_dirty_profiles(ids)!
DELETE FROM profile_dirty WHERE shop_id = ANY(:ids::bigint[]);

-- name: get_full_profile(code)^
-- For a signed-in person: the documents they might be allowed, with what the access check needs.
-- The merchant's is the citizen's with the private parts laid over it; the inspector's adds the risk.
SELECT p.shop_id, p.version, p.area_path, p.citizen_doc, p.citizen_doc || p.private_doc AS merchant_doc,
       p.citizen_doc || p.private_doc
         || jsonb_build_object('risk_score', p.risk_score, 'risk_reasons', p.risk_reasons) AS full_doc,
       CASE WHEN s.status <> 'closed' THEN s.trade || ' ' || s.area_id END AS audience
FROM shop_profile p JOIN shop s ON s.id = p.shop_id WHERE p.code = :code;

-- name: get_shop_id_by_code(code)$
SELECT id FROM shop WHERE code = :code;

-- name: list_citizen_docs(ids)
-- with whom the shop's notices are for (notices.py): none for a closed shop
SELECT p.shop_id, p.code, p.version, p.citizen_doc::text AS doc,
       CASE WHEN s.status <> 'closed' THEN s.trade || ' ' || s.area_id END AS audience
FROM shop_profile p JOIN shop s ON s.id = p.shop_id
WHERE p.shop_id = ANY(:ids::bigint[]);

-- name: store_citizen_answers(codes, kinds, shop_ids, versions, statuses, bodies, audiences)!
INSERT INTO citizen_answer AS a (code, kind, shop_id, version, status, body, audience)
SELECT * FROM unnest(:codes::text[], :kinds::text[], :shop_ids::bigint[], :versions::bigint[],
                     :statuses::int2[], :bodies::bytea[], :audiences::text[])
ON CONFLICT (code, kind) DO UPDATE SET
    shop_id = excluded.shop_id, version = excluded.version, status = excluded.status, body = excluded.body,
    audience = excluded.audience;

-- name: list_trade_notices(kept)
-- The newest `kept` notices sent to a whole trade and area (a policy or its correction with no
-- filter narrowing it to some shops; not one cancelled, nor the correction of one), newest first,
-- each with the paths of its areas: what the citizen's views join to a shop (notices.py).
SELECT p.public_id::text AS id, p.title, p.kind, p.last_sent_at AS sent_at, p.trades,
       ARRAY(SELECT a.path FROM area a WHERE a.id = ANY(p.area_ids)) AS paths
FROM policy p
WHERE p.kind IN ('policy', 'correction') AND p.filters = '{}' AND p.last_sent_at IS NOT NULL
  AND p.status <> 'cancelled'
  AND NOT EXISTS (SELECT 1 FROM policy c WHERE c.id = p.corrects_policy_id AND c.status = 'cancelled')
ORDER BY p.last_sent_at DESC, p.id DESC
LIMIT :kept;

-- name: list_area_paths()
SELECT id, path FROM area;

-- name: get_notices_mark()^
-- Moves, in commit order, with every change to a policy or an area (migration 0038): a worker
-- reads the notices again only when it moved.
SELECT n, changed_at FROM notices_mark;

-- name: list_shop_notices(shop_id, limit)
-- The owner's and the inspector's views: what this shop's inbox received, newest first, and
-- whether it has been read.
SELECT p.public_id::text AS id, p.title, p.kind, d.delivered_at AS sent_at, d.read_at IS NOT NULL AS read
FROM delivery d JOIN policy p ON p.id = d.policy_id
WHERE d.shop_id = :shop_id AND d.channel = 'inbox' AND d.status = 'delivered'
ORDER BY d.created_at DESC, d.id DESC
LIMIT :limit;
