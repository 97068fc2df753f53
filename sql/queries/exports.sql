-- Open data exports: requests, the worker's claim, and an area's public rows streamed into
-- files. Public fields only: never an owner's or staff data, never an inspection's summary.
-- The streamed queries take one parameter, the area's path (the worker runs them through a
-- server-side cursor with the path as $1): the area and every area below it.

-- name: get_export_area(code)^
SELECT a.id, a.code, a.path FROM area a WHERE a.code = :code;

-- name: get_current_export_id(area_id, format, fresh_seconds)$
-- What a request gets instead of a new export: the newest ready one if it is fresh, else the one
-- that waits or runs.
SELECT e.id
FROM export_file e
WHERE e.area_id = :area_id AND e.format = :format
  AND (e.status IN ('pending', 'running')
       OR (e.status = 'ready' AND e.finished_at > now() - make_interval(secs => :fresh_seconds)))
ORDER BY (e.status = 'ready') DESC, e.finished_at DESC NULLS LAST
LIMIT 1;

-- name: create_export_file(area_id, format)$
-- NULL when another request's export of the area in this format waits or runs already.
INSERT INTO export_file (area_id, format) VALUES (:area_id, :format)
ON CONFLICT (area_id, format) WHERE status IN ('pending', 'running') DO NOTHING
RETURNING id;

-- name: get_export_file(id)^
SELECT e.id, a.code AS area_code, e.format, e.status, e.path, e.size, e.sha256, e.rows,
       e.requested_at, e.started_at, e.finished_at, e.error
FROM export_file e JOIN area a ON a.id = e.area_id
WHERE e.id = :id;

-- name: claim_export_file(stale_seconds)^
-- The oldest waiting export, or one whose worker has been silent too long (it died mid-run).
WITH next AS (
    SELECT e.id FROM export_file e
    WHERE e.status = 'pending'
       OR (e.status = 'running' AND e.started_at < now() - make_interval(secs => :stale_seconds))
    ORDER BY e.requested_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE export_file e SET status = 'running', started_at = clock_timestamp(), error = NULL
FROM next, area a
WHERE e.id = next.id AND a.id = e.area_id
RETURNING e.id, e.format, e.started_at, a.code AS area_code, a.path AS area_path, a.name AS area_name,
          coalesce((SELECT d.name FROM area d WHERE d.path = split_part(a.path, '.', 1)), a.name) AS district_name;

-- name: lock_claimed_export(id, started_at)$
-- Whether this worker still holds the claim (locked until its transaction ends).
SELECT true FROM export_file
WHERE id = :id AND status = 'running' AND started_at = :started_at
FOR UPDATE;

-- name: finish_export_file(id, path, size, sha256, rows)!
UPDATE export_file
SET status = 'ready', path = :path, size = :size, sha256 = :sha256, rows = :rows, finished_at = now(),
    error = NULL
WHERE id = :id;

-- name: fail_export_file(id, started_at, error)!
UPDATE export_file SET status = 'failed', finished_at = now(), error = :error
WHERE id = :id AND status = 'running' AND started_at = :started_at;

-- name: list_export_businesses(area_path)
SELECT s.uscc, s.name, s.address, s.lat, s.lon, s.phone
FROM shop s JOIN area a ON a.id = s.area_id
WHERE a.path = :area_path OR a.path LIKE :area_path || '.%'
ORDER BY s.id;

-- name: list_export_inspections(area_path)
SELECT s.uscc, to_char(i.inspected_on, 'YYYYMMDD') AS day, i.score, i.score_scale, i.result, i.kind
FROM inspection i JOIN shop s ON s.id = i.shop_id JOIN area a ON a.id = s.area_id
WHERE a.path = :area_path OR a.path LIKE :area_path || '.%'
ORDER BY i.shop_id, i.inspected_on, i.id;

-- name: list_export_violations(area_path)
SELECT s.uscc, to_char(i.inspected_on, 'YYYYMMDD') AS day, v.description, v.code, v.critical
FROM violation v JOIN inspection i ON i.id = v.inspection_id JOIN shop s ON s.id = i.shop_id
     JOIN area a ON a.id = s.area_id
WHERE a.path = :area_path OR a.path LIKE :area_path || '.%'
ORDER BY i.shop_id, i.inspected_on, i.id, v.id;

-- name: list_export_documents(area_path)
-- One JSON document per shop: its public fields, then the citizen's document of its profile
-- (absent until the profile is first built), as text so that it goes to the file undecoded.
SELECT (jsonb_build_object(
            'code', s.code, 'uscc', s.uscc, 'area_code', a.code, 'name', s.name, 'name_en', s.name_en,
            'trade', s.trade, 'address', s.address, 'lat', s.lat, 'lon', s.lon, 'phone', s.phone,
            'status', s.status)
        || coalesce(p.citizen_doc, '{}'::jsonb))::text AS line
FROM shop s JOIN area a ON a.id = s.area_id LEFT JOIN shop_profile p ON p.shop_id = s.id
WHERE a.path = :area_path OR a.path LIKE :area_path || '.%'
ORDER BY s.id;

-- name: expire_export_files(keep_seconds)
-- Ready exports that a newer ready export of the same area and format has replaced more than
-- keep_seconds ago: marked expired, their file paths returned (the caller deletes the files once
-- this is committed).
WITH old AS (
    SELECT e.id, e.path FROM export_file e
    WHERE e.status = 'ready'
      AND EXISTS (
          SELECT 1 FROM export_file n
          WHERE n.area_id = e.area_id AND n.format = e.format AND n.status = 'ready'
            AND n.finished_at > e.finished_at
            AND n.finished_at < now() - make_interval(secs => :keep_seconds))
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE export_file e SET status = 'expired', path = NULL
FROM old
WHERE e.id = old.id
RETURNING old.path;

-- name: list_ready_export_paths()
SELECT path FROM export_file WHERE status = 'ready';
