-- Sessions behind tokens, throttled attempts, and an audit trail nobody can rewrite.

-- A token names a session; logout and password change revoke sessions, so a stolen token
-- stops working without waiting for its expiry.
CREATE TABLE session (
    id              text PRIMARY KEY,               -- random, 128 bits, base32
    account_id      bigint NOT NULL REFERENCES account (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    client          text
);
CREATE INDEX session_account_idx ON session (account_id) WHERE revoked_at IS NULL;

-- Failed login and claim attempts, per key ('login:<name>', 'ip:<address>', 'claim:<shop>').
CREATE TABLE auth_attempt (
    key             text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_attempt_key_idx ON auth_attempt (key, at);

-- Append-only, whoever connects: the trigger refuses UPDATE and DELETE even for the owner.
CREATE FUNCTION audit_event_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_is_append_only();
CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_is_append_only();

-- The role the web processes take for every request: everything they need, and on audit rows
-- only reading and appending. NOLOGIN: the service's login role becomes it on connect. Made only
-- where the migrating role may create roles (a managed server may not allow it).
DO $$
BEGIN
    IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'no role merchant_code_app: % may not create roles', current_user;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'merchant_code_app') THEN
        CREATE ROLE merchant_code_app NOLOGIN;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT merchant_code_app TO %I', current_user);
    END IF;
    GRANT USAGE ON SCHEMA public TO merchant_code_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO merchant_code_app;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO merchant_code_app;
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM merchant_code_app;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migration FROM merchant_code_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO merchant_code_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO merchant_code_app;
END
$$;
