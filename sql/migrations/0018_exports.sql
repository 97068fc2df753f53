-- Open data exports (merchant_code/exports.py): an area's public records as a LIVES zip or a
-- JSON Lines dump, requested through the public API and written by a job into DATA_DIR/exports.

CREATE TABLE export_file (
    -- a uuid, not a counter: the download URL says nothing about how many exports exist
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    area_id         bigint NOT NULL REFERENCES area (id),
    format          text NOT NULL CHECK (format IN ('lives', 'jsonl')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'ready', 'failed')),
    path            text,                       -- relative to DATA_DIR
    size            bigint CHECK (size >= 0),
    sha256          text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    rows            jsonb,                      -- rows written, per file
    requested_at    timestamptz NOT NULL DEFAULT now(),
    -- set by every claim: the worker that finishes must still hold the claim it started with
    started_at      timestamptz,
    finished_at     timestamptz,
    error           text,
    CHECK (status <> 'ready' OR (path IS NOT NULL AND size IS NOT NULL AND sha256 IS NOT NULL
                                 AND finished_at IS NOT NULL)),
    CHECK (status = 'pending' OR started_at IS NOT NULL)
);
-- one export of an area in a format waits or runs at a time, however many ask at once
CREATE UNIQUE INDEX export_file_active_idx ON export_file (area_id, format)
    WHERE status IN ('pending', 'running');
CREATE INDEX export_file_ready_idx ON export_file (area_id, format, finished_at DESC)
    WHERE status = 'ready';
