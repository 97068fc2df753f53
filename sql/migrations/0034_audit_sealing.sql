-- Audited writes no longer queue on one lock: a write inserts its audit row unsealed (no hash),
-- and one sealer at a time chains committed rows in batches (merchant_code/audit.py). The chain
-- runs in seal order, `seal_seq`, which the sealer assigns; the rows already chained were chained
-- in id order, so their seal_seq is their id.
DROP TRIGGER audit_event_append_only ON audit_event;
ALTER TABLE audit_event ALTER COLUMN hash DROP NOT NULL;
ALTER TABLE audit_event ADD COLUMN seal_seq bigint;
UPDATE audit_event SET seal_seq = id;
ALTER TABLE audit_event ADD CONSTRAINT audit_event_sealed_whole
    CHECK ((seal_seq IS NULL) = (hash IS NULL) AND (prev_hash IS NULL OR hash IS NOT NULL));
-- one row per place in the chain: two sealers that raced could not both extend the same head.
-- Partial, like the hash's index (0031) from now on: an append then adds no entry to either, the
-- seal adds both.
CREATE UNIQUE INDEX audit_event_seal_seq_idx ON audit_event (seal_seq) WHERE seal_seq IS NOT NULL;
DROP INDEX audit_event_hash_idx;
CREATE INDEX audit_event_hash_idx ON audit_event (hash) WHERE hash IS NOT NULL;
-- what the sealer reads: the few rows not chained yet
CREATE INDEX audit_event_unsealed_idx ON audit_event (id) WHERE hash IS NULL;

-- A checkpoint signs its head's place in the chain too; NULL in those signed before sealing,
-- whose head's place was its id.
ALTER TABLE audit_checkpoint ADD COLUMN head_seq bigint;

-- Still append-only, whoever connects: an UPDATE may only set an unsealed row's seal (seal_seq,
-- prev_hash, hash), once, and nothing else of it; DELETE and TRUNCATE are refused as before.
CREATE FUNCTION audit_event_seals_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND OLD.seal_seq IS NULL AND OLD.prev_hash IS NULL
       AND NEW.hash IS NOT NULL AND NEW.seal_seq IS NOT NULL
       AND (NEW.id, NEW.at, NEW.actor_account_id, NEW.action, NEW.object_type, NEW.object_id,
            NEW.request_id, NEW.detail)
           IS NOT DISTINCT FROM (OLD.id, OLD.at, OLD.actor_account_id, OLD.action, OLD.object_type,
                                 OLD.object_id, OLD.request_id, OLD.detail) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only (% refused: only an unsealed row''s seal may be set, once)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_seals_once();

-- The web processes (and their scheduler, which seals) may insert a row's content only (never a
-- seal of their own making) and set the seal columns only; the trigger above makes that once.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'merchant_code_app') THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_event FROM merchant_code_app;
        GRANT INSERT (at, actor_account_id, action, object_type, object_id, request_id, detail)
            ON audit_event TO merchant_code_app;
        GRANT UPDATE (seal_seq, prev_hash, hash) ON audit_event TO merchant_code_app;
    END IF;
END
$$;
