-- People who log in, the per-shop aggregate a scan reads, and the append-only audit trail.

CREATE TABLE account (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login           text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._-]{2,63}$'),
    role            text NOT NULL CHECK (role IN ('merchant', 'inspector', 'manager', 'admin')),
    area_id         bigint REFERENCES area (id),
    display_name    text NOT NULL,
    phone           text,
    password_hash   text NOT NULL,
    permissions     text[] NOT NULL DEFAULT '{}',
    disabled_at     timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- inspectors and managers work inside an area; merchants and admins are not bound to one
    CHECK ((role IN ('inspector', 'manager')) = (area_id IS NOT NULL))
);
CREATE INDEX account_area_idx ON account (area_id);

CREATE TABLE account_shop (
    account_id      bigint NOT NULL REFERENCES account (id),
    shop_id         bigint NOT NULL REFERENCES shop (id),
    since           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, shop_id)
);
CREATE INDEX account_shop_shop_idx ON account_shop (shop_id);

ALTER TABLE inspection
    ADD CONSTRAINT inspection_inspector_fk FOREIGN KEY (inspector_account_id) REFERENCES account (id);

-- One row per shop: what a scan reads, in one primary-key lookup.
CREATE TABLE shop_profile (
    shop_id         bigint PRIMARY KEY REFERENCES shop (id),
    version         bigint NOT NULL DEFAULT 1,
    citizen_doc     jsonb NOT NULL,
    merchant_doc    jsonb NOT NULL,
    full_doc        jsonb NOT NULL,
    grade           text CHECK (grade IN ('A', 'B', 'C')),
    grade_date      date,
    risk_score      smallint NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    risk_reasons    jsonb NOT NULL DEFAULT '[]',
    freshness       jsonb NOT NULL DEFAULT '{}',
    rebuilt_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shop_profile_rebuilt_at_idx ON shop_profile (rebuilt_at);
CREATE INDEX shop_profile_risk_idx ON shop_profile (risk_score DESC);

-- Shops whose inputs changed; a worker rebuilds their profiles set-based.
CREATE TABLE profile_dirty (
    shop_id         bigint PRIMARY KEY REFERENCES shop (id),
    marked_at       timestamptz NOT NULL DEFAULT now()
);

-- Append-only and hash-chained: each row's hash covers its content and the previous hash.
CREATE TABLE audit_event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor_account_id bigint REFERENCES account (id),
    action          text NOT NULL,
    object_type     text NOT NULL,
    object_id       text,
    request_id      text,
    detail          jsonb NOT NULL DEFAULT '{}',
    prev_hash       bytea,
    hash            bytea NOT NULL
);
CREATE INDEX audit_event_object_idx ON audit_event (object_type, object_id);
CREATE INDEX audit_event_actor_idx ON audit_event (actor_account_id, at);
