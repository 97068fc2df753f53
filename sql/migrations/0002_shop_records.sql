-- What is known about a shop: licences, inspections, reviews, sentiment, honours, staff.
-- Every ingested row carries (source, external_id), unique, and the time it was fetched.

CREATE TABLE licence (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    source          text NOT NULL,
    external_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN (
                        'business', 'food_business', 'pharmacy', 'hygiene', 'education',
                        'entertainment', 'other')),
    number          text NOT NULL,
    holder_uscc     text,
    issued_on       date,
    valid_from      date,
    valid_to        date,                      -- NULL: no end date
    status          text NOT NULL DEFAULT 'active' CHECK (status IN (
                        'active', 'pending_verification', 'suspended', 'revoked', 'cancelled')),
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id),
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from)
);
CREATE INDEX licence_shop_idx ON licence (shop_id);
CREATE INDEX licence_valid_to_idx ON licence (valid_to) WHERE status = 'active';
CREATE INDEX licence_number_idx ON licence (number);
CREATE INDEX licence_holder_uscc_idx ON licence (holder_uscc);

CREATE TABLE inspection (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    source          text NOT NULL,
    external_id     text NOT NULL,
    inspected_on    date NOT NULL,
    kind            text NOT NULL DEFAULT 'routine' CHECK (kind IN (
                        'routine', 'follow_up', 'complaint', 'special', 'licensing')),
    score           numeric(5, 1),
    result          text NOT NULL CHECK (result IN ('pass', 'rectify', 'fail')),
    -- China's catering food-safety grading: annual grade A/B/C
    grade           text CHECK (grade IN ('A', 'B', 'C')),
    rectify_due     date,
    summary         text,
    inspector_account_id bigint,               -- FK added with the account table
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX inspection_shop_idx ON inspection (shop_id, inspected_on DESC);
CREATE INDEX inspection_rectify_due_idx ON inspection (rectify_due) WHERE rectify_due IS NOT NULL;

CREATE TABLE violation (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inspection_id   bigint NOT NULL REFERENCES inspection (id) ON DELETE CASCADE,
    code            text NOT NULL,
    description     text NOT NULL,
    critical        boolean NOT NULL DEFAULT false,
    corrected       boolean NOT NULL DEFAULT false
);
CREATE INDEX violation_inspection_idx ON violation (inspection_id);

CREATE TABLE review (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    source          text NOT NULL,
    external_id     text NOT NULL,
    rating          smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body            text,
    author_alias    text,
    posted_at       timestamptz NOT NULL,
    edited_at       timestamptz,
    deleted_at      timestamptz,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX review_shop_idx ON review (shop_id, posted_at DESC);

CREATE TABLE sentiment_item (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint REFERENCES shop (id),  -- NULL until matched to a shop
    source          text NOT NULL,
    external_id     text NOT NULL,
    title           text NOT NULL,
    url             text,
    summary         text,
    published_at    timestamptz,
    tone            text CHECK (tone IN ('positive', 'neutral', 'negative')),
    match_confidence real CHECK (match_confidence BETWEEN 0 AND 1),
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX sentiment_item_shop_idx ON sentiment_item (shop_id, published_at DESC);

CREATE TABLE honour (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    source          text NOT NULL,
    external_id     text NOT NULL,
    title           text NOT NULL,
    issuer          text NOT NULL,
    awarded_on      date NOT NULL,
    valid_to        date,
    verified        boolean NOT NULL DEFAULT false,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX honour_shop_idx ON honour (shop_id);

-- Staff are personal data end to end: names, ID numbers, health certificates.
CREATE TABLE staff (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    source          text NOT NULL,
    external_id     text NOT NULL,
    name            text NOT NULL,
    id_number       text,
    phone           text,
    role            text,
    health_cert_number   text,
    health_cert_valid_to date,
    active          boolean NOT NULL DEFAULT true,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX staff_shop_idx ON staff (shop_id);
CREATE INDEX staff_health_cert_valid_to_idx ON staff (health_cert_valid_to) WHERE active;
