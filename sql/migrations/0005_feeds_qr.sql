-- Outside sources, their runs and their quarantine; the keys that sign stickers.

CREATE TABLE feed_source (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN (
                        'lives', 'fhrs', 'licence_registry', 'review_platform', 'rss')),
    name            text NOT NULL UNIQUE,
    url             text NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    interval_seconds integer NOT NULL DEFAULT 3600 CHECK (interval_seconds >= 60),
    cursor          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feed_run (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id       bigint NOT NULL REFERENCES feed_source (id),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    fetched         integer NOT NULL DEFAULT 0,
    inserted        integer NOT NULL DEFAULT 0,
    updated         integer NOT NULL DEFAULT 0,
    unchanged       integer NOT NULL DEFAULT 0,
    quarantined     integer NOT NULL DEFAULT 0,
    error           text,
    CHECK (status <> 'ok' OR fetched = inserted + updated + unchanged + quarantined)
);
CREATE INDEX feed_run_source_idx ON feed_run (source_id, started_at DESC);

-- Nothing is dropped: a record that cannot be used is kept raw with the reason.
CREATE TABLE feed_reject (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES feed_run (id),
    source_id       bigint NOT NULL REFERENCES feed_source (id),
    external_id     text,
    raw             text NOT NULL,
    reason          text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_reject_run_idx ON feed_reject (run_id);

CREATE TABLE qr_key (
    kid             text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,16}$'),
    public_key      bytea NOT NULL CHECK (length(public_key) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,                   -- stops signing, still verifies
    revoked_at      timestamptz                    -- verifies no more
);

CREATE TABLE qr_revocation (
    code            text PRIMARY KEY,
    revoked_at      timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL
);
