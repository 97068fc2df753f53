-- name: create_audit_event(at, actor_account_id, action, object_type, object_id, request_id, detail)$
-- unsealed: no lock, no read of the chain; the sealer chains it once it has committed
INSERT INTO audit_event (at, actor_account_id, action, object_type, object_id, request_id, detail)
VALUES (:at, :actor_account_id, :action, :object_type, :object_id, :request_id, :detail)
RETURNING id;

-- name: try_lock_audit_sealer(key)$
SELECT pg_try_advisory_xact_lock(:key);

-- name: get_audit_seal_head()^
-- the chain's last sealed row: where the next seal continues
SELECT seal_seq, hash FROM audit_event WHERE seal_seq IS NOT NULL ORDER BY seal_seq DESC LIMIT 1;

-- name: list_unsealed_audit_events(batch)
-- committed rows not chained yet, oldest id first (the order they get sealed in)
SELECT id, at, actor_account_id, action, object_type, object_id, request_id, detail,
       detail::text AS detail_text
FROM audit_event WHERE hash IS NULL ORDER BY id LIMIT :batch;

-- name: seal_audit_events(ids, seqs, prev_hashes, hashes)$
-- one statement per batch; a row sealed meanwhile (by a sealer that raced this one) is skipped,
-- and the caller rolls back when any was
WITH sealed AS (
    UPDATE audit_event e SET seal_seq = s.seq, prev_hash = s.prev_hash, hash = s.hash
    FROM unnest(:ids::bigint[], :seqs::bigint[], :prev_hashes::bytea[], :hashes::bytea[])
         AS s(id, seq, prev_hash, hash)
    WHERE e.id = s.id AND e.hash IS NULL
    RETURNING 1
)
SELECT count(*) FROM sealed;

-- name: get_audit_unsealed()^
-- what no seal covers yet: how many rows, and when the oldest was written
SELECT count(*) AS n, min(at) AS oldest FROM audit_event WHERE hash IS NULL;

-- name: list_audit_chain(after, batch)
-- the chain in seal order, from the row after seal_seq `after`
SELECT id, seal_seq, at, actor_account_id, action, object_type, object_id, request_id, detail,
       detail::text AS detail_text, prev_hash, hash
FROM audit_event WHERE seal_seq > :after ORDER BY seal_seq LIMIT :batch;

-- name: list_audit_events(before, limit)
-- Newest sealed first, for the admin's audit page: a row is named by its chain hash (hex), and a
-- page starts below the row whose hash is `before` (none that exists: an empty page). Rows not
-- sealed yet (a second or so) have no name and show once sealed.
SELECT encode(e.hash, 'hex') AS id, e.at, a.login AS actor, e.action, e.object_type, e.object_id,
       e.request_id, e.detail
FROM audit_event e LEFT JOIN account a ON a.id = e.actor_account_id
WHERE e.seal_seq IS NOT NULL
  AND (:before::text IS NULL
       OR e.seal_seq < (SELECT min(b.seal_seq) FROM audit_event b WHERE b.hash = decode(lower(:before), 'hex')))
ORDER BY e.seal_seq DESC LIMIT :limit;

-- name: get_audit_head()^
-- the chain's last sealed row: what a checkpoint signs
SELECT id, seal_seq, hash FROM audit_event WHERE seal_seq IS NOT NULL ORDER BY seal_seq DESC LIMIT 1;

-- name: create_audit_checkpoint(at, head_id, head_seq, head_hash, kid, signature)$
-- one checkpoint per head: another instance that signed this head already wins (NULL)
INSERT INTO audit_checkpoint (at, head_id, head_seq, head_hash, kid, signature)
VALUES (:at, :head_id, :head_seq, :head_hash, :kid, :signature)
ON CONFLICT (head_id) DO NOTHING
RETURNING id;

-- name: list_audit_checkpoints()
SELECT id, at, head_id, head_hash, kid, signature, head_seq FROM audit_checkpoint ORDER BY id;
