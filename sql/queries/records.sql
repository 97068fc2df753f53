-- Writes of merchants, inspectors and citizens into a shop's records. Every one of them marks
-- the profile dirty through the tables' triggers; none rebuilds it.

-- name: get_shop_for_write(code)^
SELECT s.id, s.code, s.trade, s.status, a.path AS area_path, t.food
FROM shop s JOIN area a ON a.id = s.area_id JOIN trade t ON t.code = s.trade
WHERE s.code = :code;

-- name: create_upload(shop_id, purpose, content_type, size, sha256, data, account_id)$
INSERT INTO upload (shop_id, purpose, content_type, size, sha256, data, account_id)
VALUES (:shop_id, :purpose, :content_type, :size, :sha256, :data, :account_id)
RETURNING id;

-- name: get_upload(public_id)^
SELECT u.id, u.shop_id, u.purpose, u.content_type, u.data, u.sha256, a.path AS area_path
FROM upload u LEFT JOIN shop s ON s.id = u.shop_id LEFT JOIN area a ON a.id = s.area_id
WHERE u.public_id = :public_id;

-- name: create_licence_submission(shop_id, kind, number, issuing_body, valid_from, valid_to, image_id, account_id)$
INSERT INTO licence (shop_id, source, external_id, kind, number, issuing_body, valid_from, valid_to, status,
                     image_id, submitted_by)
VALUES (:shop_id, 'merchant', gen_random_uuid()::text, :kind, :number, :issuing_body, :valid_from, :valid_to,
        'pending_verification', :image_id, :account_id)
RETURNING public_id::text;

-- name: create_staff_submission(shop_id, name, role, phone, id_number, health_cert_number, health_cert_valid_to, image_id)$
INSERT INTO staff (shop_id, source, external_id, name, role, phone, id_number, health_cert_number,
                   health_cert_valid_to, cert_status, cert_image_id)
VALUES (:shop_id, 'merchant', gen_random_uuid()::text, :name, :role, :phone, :id_number, :health_cert_number,
        :health_cert_valid_to, 'pending_verification', :image_id)
RETURNING public_id::text;

-- name: create_honour_submission(shop_id, title, issuer, awarded_on, valid_to, image_id)$
INSERT INTO honour (shop_id, source, external_id, title, issuer, awarded_on, valid_to, verified, image_id)
VALUES (:shop_id, 'merchant', gen_random_uuid()::text, :title, :issuer, :awarded_on, :valid_to, false, :image_id)
RETURNING public_id::text;

-- name: find_submission(public_id)^
-- A pending licence, health certificate or honour by its public id, with its shop's area.
SELECT x.kind, x.id, x.shop_id, s.code, a.path AS area_path, x.pending
FROM (
    SELECT 'licence' AS kind, id, shop_id, status = 'pending_verification' AS pending
    FROM licence WHERE public_id = :public_id::uuid
    UNION ALL
    SELECT 'staff', id, shop_id, cert_status = 'pending_verification' FROM staff WHERE public_id = :public_id::uuid
    UNION ALL
    SELECT 'honour', id, shop_id, NOT verified AND rejected_at IS NULL FROM honour WHERE public_id = :public_id::uuid
) x JOIN shop s ON s.id = x.shop_id JOIN area a ON a.id = s.area_id;

-- name: review_licence(id, approve, account_id, note)!
UPDATE licence SET status = CASE WHEN :approve THEN 'active' ELSE 'rejected' END,
                   reviewed_by = :account_id, reviewed_at = now(), review_note = :note, updated_at = now()
WHERE id = :id AND status = 'pending_verification';

-- name: review_staff(id, approve, account_id, note)!
UPDATE staff SET cert_status = CASE WHEN :approve THEN 'verified' ELSE 'rejected' END,
                 reviewed_by = :account_id, reviewed_at = now(), review_note = :note
WHERE id = :id AND cert_status = 'pending_verification';

-- name: review_honour(id, approve, account_id, note)!
UPDATE honour SET verified = :approve, rejected_at = CASE WHEN :approve THEN NULL ELSE now() END,
                  reviewed_by = :account_id, review_note = :note
WHERE id = :id AND NOT verified AND rejected_at IS NULL;

-- name: list_pending_submissions(prefix, limit)
-- What merchants in the caller's area sent in and nobody has checked yet, oldest first.
SELECT x.id::text AS id, x.kind, x.summary, x.submitted_at, s.code AS shop_code, s.name AS shop_name
FROM (
    SELECT public_id AS id, 'licence' AS kind, kind || ' ' || number AS summary, fetched_at AS submitted_at, shop_id
    FROM licence WHERE status = 'pending_verification'
    UNION ALL
    SELECT public_id, 'staff', coalesce(health_cert_number, '') || ' ' || health_cert_valid_to, fetched_at, shop_id
    FROM staff WHERE cert_status = 'pending_verification'
    UNION ALL
    SELECT public_id, 'honour', title || ' / ' || issuer, fetched_at, shop_id
    FROM honour WHERE NOT verified AND rejected_at IS NULL
) x JOIN shop s ON s.id = x.shop_id JOIN area a ON a.id = s.area_id
WHERE (:prefix::text IS NULL OR a.path = :prefix OR a.path LIKE :prefix || '.%')
ORDER BY x.submitted_at LIMIT :limit;

-- name: list_violation_codes()
SELECT code, description, description_en, critical FROM violation_code ORDER BY code;

-- name: create_inspection(shop_id, kind, result, score, grade, rectify_due, summary, photo_id, account_id, inspected_on)^
INSERT INTO inspection (shop_id, source, external_id, inspected_on, kind, score, result, grade, rectify_due,
                        summary, photo_id, inspector_account_id)
VALUES (:shop_id, 'patrol', gen_random_uuid()::text, :inspected_on, :kind, :score, :result, :grade,
        :rectify_due, :summary, :photo_id, :account_id)
RETURNING id, public_id::text;

-- name: create_violations(inspection_id, codes)!
INSERT INTO violation (inspection_id, code, description, critical)
SELECT :inspection_id, vc.code, vc.description, vc.critical
FROM violation_code vc WHERE vc.code = ANY(:codes::text[]);

-- name: get_inspection_for_reply(public_id)^
SELECT i.id, i.shop_id, i.merchant_reply FROM inspection i WHERE i.public_id = :public_id::uuid;

-- name: set_merchant_reply(id, reply)$
UPDATE inspection SET merchant_reply = :reply, merchant_replied_at = now()
WHERE id = :id AND merchant_reply IS NULL
RETURNING id;

-- name: list_due_shops(prefix, limit, lat, lon)
-- The caller's area, riskiest first. With the phone's position, risk is taken in bands of 20
-- points and, within a band, the nearest shop comes first, so a patrol takes what is urgent and
-- close. Distances are great-circle metres.
SELECT * FROM (
    SELECT p.code, s.name, s.address, p.risk_score, p.risk_reasons, p.grade, s.lat, s.lon,
           CASE WHEN :lat::float8 IS NULL OR s.lat IS NULL THEN NULL
                ELSE round(6371000 * 2 * asin(sqrt(
                     power(sin(radians(s.lat - :lat::float8) / 2), 2)
                     + cos(radians(:lat::float8)) * cos(radians(s.lat))
                     * power(sin(radians(s.lon - :lon::float8) / 2), 2))))::int END AS distance_m
    FROM shop_profile p JOIN shop s ON s.id = p.shop_id
    WHERE (:prefix::text IS NULL OR p.area_path = :prefix OR p.area_path LIKE :prefix || '.%')
      AND s.status <> 'closed'
    ORDER BY p.risk_score DESC
    LIMIT CASE WHEN :lat::float8 IS NULL THEN :limit ELSE :limit * 10 END
) x
ORDER BY CASE WHEN :lat::float8 IS NULL THEN x.risk_score ELSE x.risk_score / 20 END DESC,
         x.distance_m NULLS LAST, x.risk_score DESC, x.code
LIMIT :limit;

-- name: create_complaint(shop_id, public_id, category, description, reporter_name, reporter_phone, reporter_email, photo_id)!
INSERT INTO case_file (public_id, shop_id, source, category, description, reporter_name, reporter_phone,
                       reporter_email, photo_id)
VALUES (:public_id, :shop_id, 'complaint', :category, :description, :reporter_name, :reporter_phone,
        :reporter_email, :photo_id);

-- name: get_case_for_tracking(public_id)^
-- What a reporter may follow: status and dates, the shop's public name; never who handles it.
SELECT c.public_id, c.category, c.status, c.opened_at, c.resolved_at, c.closed_at, s.name AS shop_name, s.code AS shop_code
FROM case_file c LEFT JOIN shop s ON s.id = c.shop_id
WHERE c.public_id = :public_id;
