-- The register itself: the area tree, the trades, and one row per shop kept forever.

CREATE TABLE area (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id   bigint REFERENCES area (id),
    level       text   NOT NULL CHECK (level IN ('district', 'subdistrict', 'grid')),
    code        text   NOT NULL UNIQUE CHECK (code ~ '^[0-9]{6,15}$'),
    -- materialised path of codes ('310104.310104001.310104001003'): a scope covers every area
    -- whose path starts with its own, answered by one range scan of the pattern index
    path        text   NOT NULL UNIQUE,
    name        text   NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    name_en     text,
    CHECK ((level = 'district') = (parent_id IS NULL))
);
CREATE INDEX area_parent_idx ON area (parent_id);
CREATE INDEX area_path_prefix_idx ON area (path text_pattern_ops);

CREATE TABLE trade (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z_]{2,40}$'),
    name        text NOT NULL,
    name_en     text NOT NULL,
    -- food trades are graded A/B/C and need a food business licence
    food        boolean NOT NULL DEFAULT false
);

INSERT INTO trade (code, name, name_en, food) VALUES
    ('catering',      '餐饮服务',   'Catering',                 true),
    ('food_retail',   '食品销售',   'Food retail',              true),
    ('retail',        '零售',       'Retail',                   false),
    ('hair_beauty',   '美容美发',   'Hair and beauty',          false),
    ('pharmacy',      '药店',       'Pharmacy',                 false),
    ('hotel',         '住宿',       'Hotel',                    false),
    ('entertainment', '娱乐场所',   'Entertainment',            false),
    ('education',     '教育培训',   'Education and training',   false),
    ('repair',        '维修服务',   'Repair services',          false),
    ('laundry',       '洗衣洗染',   'Laundry',                  false);

CREATE TABLE shop (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- public code on the sticker: 12 Crockford base32 symbols (60 random bits) + 1 check symbol
    code            text NOT NULL UNIQUE CHECK (code ~ '^[0-9A-HJKMNP-TV-Z]{13}$'),
    uscc            text NOT NULL UNIQUE CHECK (uscc ~ '^[0-9A-HJ-NP-RT-UW-Y]{18}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    name_en         text,
    trade           text NOT NULL REFERENCES trade (code),
    area_id         bigint NOT NULL REFERENCES area (id),
    address         text NOT NULL,
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lon             double precision CHECK (lon BETWEEN -180 AND 180),
    phone           text,                       -- the shop's public phone, not the owner's
    opening_hours   text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    -- personal data of the current operator: never in a citizen view
    owner_name      text,
    owner_phone     text,
    owner_id_number text,
    -- argon2 hash of the one-time claim code printed on the shop's QR letter
    claim_code_hash text,
    claimed_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shop_area_idx ON shop (area_id);
CREATE INDEX shop_trade_area_idx ON shop (trade, area_id);
CREATE INDEX shop_status_idx ON shop (status) WHERE status <> 'active';

-- Operators change; the shop (and its history) stays. One row per operator period.
CREATE TABLE shop_operator (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    owner_name      text,
    owner_phone     text,
    owner_id_number text,
    valid_from      timestamptz NOT NULL DEFAULT now(),
    valid_to        timestamptz,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX shop_operator_shop_idx ON shop_operator (shop_id, valid_from DESC);

-- Names change too (a rename keeps the code and the record).
CREATE TABLE shop_name_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id     bigint NOT NULL REFERENCES shop (id),
    name        text NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz NOT NULL
);
CREATE INDEX shop_name_history_shop_idx ON shop_name_history (shop_id);
