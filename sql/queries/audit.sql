-- name: lock_audit_chain(key)$
SELECT pg_advisory_xact_lock(:key) IS NOT NULL;

-- name: get_last_audit_hash()$
SELECT hash FROM audit_event ORDER BY id DESC LIMIT 1;

-- name: next_audit_id()$
SELECT nextval(pg_get_serial_sequence('audit_event', 'id'));

-- name: create_audit_event(id, at, actor_account_id, action, object_type, object_id, request_id, detail, prev_hash, hash)!
INSERT INTO audit_event (id, at, actor_account_id, action, object_type, object_id, request_id, detail,
                         prev_hash, hash)
OVERRIDING SYSTEM VALUE
VALUES (:id, :at, :actor_account_id, :action, :object_type, :object_id, :request_id, :detail,
        :prev_hash, :hash);

-- name: get_jsonb_text(value)$
-- how PostgreSQL will print the value once stored as jsonb: what the audit hash covers
SELECT (:value::jsonb)::text;

-- name: list_audit_chain(after, batch)
SELECT id, at, actor_account_id, action, object_type, object_id, request_id, detail,
       detail::text AS detail_text, prev_hash, hash
FROM audit_event WHERE id > :after ORDER BY id LIMIT :batch;

-- name: list_audit_events(before, limit)
-- Newest first, for the admin's audit page: a row is named by its chain hash (hex), and a page
-- starts below the row whose hash is `before` (none that exists: an empty page).
SELECT encode(e.hash, 'hex') AS id, e.at, a.login AS actor, e.action, e.object_type, e.object_id,
       e.request_id, e.detail
FROM audit_event e LEFT JOIN account a ON a.id = e.actor_account_id
WHERE :before::text IS NULL
   OR e.id < (SELECT min(b.id) FROM audit_event b WHERE b.hash = decode(lower(:before), 'hex'))
ORDER BY e.id DESC LIMIT :limit;

-- name: get_audit_head()^
-- the chain's newest row: what a checkpoint signs
SELECT id, hash FROM audit_event ORDER BY id DESC LIMIT 1;

-- name: create_audit_checkpoint(at, head_id, head_hash, kid, signature)$
-- one checkpoint per head: another instance that signed this head already wins (NULL)
INSERT INTO audit_checkpoint (at, head_id, head_hash, kid, signature)
VALUES (:at, :head_id, :head_hash, :kid, :signature)
ON CONFLICT (head_id) DO NOTHING
RETURNING id;

-- name: list_audit_checkpoints()
SELECT id, at, head_id, head_hash, kid, signature FROM audit_checkpoint ORDER BY id;
