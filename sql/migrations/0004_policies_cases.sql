-- Policies pushed to trades, their outbox of deliveries, and closed-loop cases.

CREATE TABLE policy (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id       uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body_md         text NOT NULL,
    links           jsonb NOT NULL DEFAULT '[]',
    trades          text[] NOT NULL DEFAULT '{}',     -- empty: every trade
    area_ids        bigint[] NOT NULL,
    filters         jsonb NOT NULL DEFAULT '{}',
    send_at         timestamptz,
    cron            text,
    status          text NOT NULL DEFAULT 'draft' CHECK (status IN (
                        'draft', 'scheduled', 'sending', 'sent', 'cancelled')),
    kind            text NOT NULL DEFAULT 'policy' CHECK (kind IN ('policy', 'correction', 'reminder')),
    corrects_policy_id bigint REFERENCES policy (id),
    author_account_id bigint REFERENCES account (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (send_at IS NULL OR cron IS NULL)
);
CREATE INDEX policy_due_idx ON policy (send_at) WHERE status = 'scheduled';
CREATE INDEX policy_trades_idx ON policy USING gin (trades);

-- The outbox: one row per policy x shop x occurrence x channel, claimed with SKIP LOCKED.
CREATE TABLE delivery (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id       bigint NOT NULL REFERENCES policy (id),
    shop_id         bigint NOT NULL REFERENCES shop (id),
    occurrence      timestamptz NOT NULL,
    channel         text NOT NULL DEFAULT 'inbox',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN (
                        'pending', 'delivered', 'failed', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    read_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (policy_id, shop_id, occurrence, channel)
);
CREATE INDEX delivery_claim_idx ON delivery (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX delivery_shop_idx ON delivery (shop_id, created_at DESC);

-- "case" is an SQL keyword: the table is case_file so no query has to quote it.
CREATE TABLE case_file (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the tracking token a reporter follows; never the sequential id
    public_id       text NOT NULL UNIQUE,
    shop_id         bigint REFERENCES shop (id),
    source          text NOT NULL CHECK (source IN (
                        'complaint', 'inspection', 'feed_signal', 'expiry', 'manual')),
    category        text NOT NULL,
    department      text,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN (
                        'open', 'assigned', 'in_progress', 'resolved', 'closed')),
    assignee_account_id bigint REFERENCES account (id),
    description     text,
    reporter_name   text,
    reporter_phone  text,
    reporter_email  text,
    inspection_id   bigint REFERENCES inspection (id),
    licence_id      bigint REFERENCES licence (id),
    sla_due_at      timestamptz,
    overdue         boolean NOT NULL DEFAULT false,
    reopened_count  integer NOT NULL DEFAULT 0,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_file_shop_idx ON case_file (shop_id, status);
CREATE INDEX case_file_sla_idx ON case_file (sla_due_at) WHERE status NOT IN ('resolved', 'closed');
CREATE INDEX case_file_department_idx ON case_file (department, status);

CREATE TABLE case_event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id         bigint NOT NULL REFERENCES case_file (id),
    at              timestamptz NOT NULL DEFAULT now(),
    actor_account_id bigint REFERENCES account (id),
    kind            text NOT NULL,
    from_status     text,
    to_status       text,
    note            text,
    photo_url       text,
    public          boolean NOT NULL DEFAULT false
);
CREATE INDEX case_event_case_idx ON case_event (case_id, at);
