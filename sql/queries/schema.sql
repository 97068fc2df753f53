-- name: has_migration_table()$
SELECT to_regclass('schema_migration') IS NOT NULL;

-- name: create_migration_table()!
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations(key)$
SELECT pg_advisory_xact_lock(:key) IS NOT NULL;

-- name: list_applied_migrations()
SELECT version, name, checksum FROM schema_migration ORDER BY version;

-- name: record_migration(version, name, checksum)!
INSERT INTO schema_migration (version, name, checksum) VALUES (:version, :name, :checksum);
