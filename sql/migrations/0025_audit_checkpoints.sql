-- Signed checkpoints of the audit chain's head, so that cutting rows off the end of the chain
-- (which leaves every remaining row intact) is found: a checkpoint names a head row that must
-- still be there, with the hash it had. Signed with the sticker keys (qr_key), so a row made up
-- in the database without the service's private key does not verify.
CREATE TABLE audit_checkpoint (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    head_id         bigint NOT NULL,
    head_hash       bytea NOT NULL CHECK (length(head_hash) = 32),
    kid             text NOT NULL REFERENCES qr_key (kid),
    signature       bytea NOT NULL CHECK (length(signature) = 64),
    -- several instances run the job: one checkpoint per head is enough
    UNIQUE (head_id)
);

-- Append-only like audit_event, whoever connects: a cut tail must not take its checkpoints along.
CREATE FUNCTION audit_checkpoint_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoint is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_checkpoint_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_is_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate
    BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoint_is_append_only();

-- The web processes (and their scheduler) may read and add checkpoints, never change or remove
-- one (the default privileges of 0006 would have granted UPDATE and DELETE).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'merchant_code_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoint FROM merchant_code_app;
        GRANT SELECT, INSERT ON audit_checkpoint TO merchant_code_app;
    END IF;
END
$$;
