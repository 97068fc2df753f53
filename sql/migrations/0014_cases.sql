-- Closed-loop cases (merchant_code/cases.py): categories with their SLA, departments, the
-- routing table, joined reports, escalation, Open311 keys, and the append-only case trail.

CREATE TABLE case_category (
    code            text PRIMARY KEY,
    name            text NOT NULL,
    name_en         text NOT NULL,
    sla_hours       integer NOT NULL CHECK (sla_hours > 0),
    public          boolean NOT NULL DEFAULT true      -- offered to citizens (complaint form, Open311)
);
INSERT INTO case_category (code, name, name_en, sla_hours, public) VALUES
    ('food_safety',     '食品安全',     'Food safety',                  24,  true),
    ('hygiene',         '环境卫生',     'Hygiene',                      72,  true),
    ('price',           '价格问题',     'Prices',                       120, true),
    ('service',         '服务质量',     'Service',                      120, true),
    ('licence',         '证照问题',     'Licences',                     168, true),
    ('other',           '其他',         'Other',                        168, true),
    ('rectification',   '整改跟进',     'Rectification follow-up',      168, false),
    ('licence_expired', '许可证过期',   'Expired licence',              168, false),
    ('reviews_falling', '评价骤降',     'Falling reviews',              168, false);

CREATE TABLE department (
    code            text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,39}$'),
    name            text NOT NULL,
    name_en         text NOT NULL
);
INSERT INTO department (code, name, name_en) VALUES
    ('food_safety', '食品安全监管科', 'Food safety division'),
    ('pricing',     '价格监督检查科', 'Price inspection division'),
    ('licensing',   '登记注册科',     'Registration and licensing division'),
    ('consumer',    '消费者权益保护科', 'Consumer protection division'),
    ('enforcement', '综合执法大队',   'Enforcement brigade');

-- staff belong to a department; a manager of a department is whom its overdue cases go to
ALTER TABLE account ADD COLUMN department text REFERENCES department (code);

-- trade x category -> department, per area (NULL: the whole jurisdiction). The most specific row
-- wins: the deepest area first, then a named category, then a named trade.
CREATE TABLE case_route (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    area_id         bigint REFERENCES area (id),
    trade           text REFERENCES trade (code),
    category        text REFERENCES case_category (code),
    department      text NOT NULL REFERENCES department (code),
    updated_by      bigint REFERENCES account (id),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX case_route_key ON case_route (coalesce(area_id, 0), coalesce(trade, ''), coalesce(category, ''));
INSERT INTO case_route (category, department) VALUES
    (NULL, 'enforcement'),
    ('food_safety', 'food_safety'), ('hygiene', 'food_safety'), ('rectification', 'food_safety'),
    ('reviews_falling', 'food_safety'), ('price', 'pricing'), ('licence', 'licensing'),
    ('licence_expired', 'licensing'), ('service', 'consumer'), ('other', 'consumer');
INSERT INTO case_route (trade, category, department) VALUES
    ('hair_beauty', 'hygiene', 'consumer'), ('hotel', 'hygiene', 'consumer');

-- The department for a case about this shop, by the routing table.
CREATE FUNCTION case_department(shop bigint, cat text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT r.department
    FROM shop s JOIN area sa ON sa.id = s.area_id, case_route r LEFT JOIN area ra ON ra.id = r.area_id
    WHERE s.id = shop
      AND (r.area_id IS NULL OR sa.path = ra.path OR sa.path LIKE ra.path || '.%')
      AND (r.trade IS NULL OR r.trade = s.trade)
      AND (r.category IS NULL OR r.category = cat)
    ORDER BY length(coalesce(ra.path, '')) DESC, (r.category IS NOT NULL) DESC, (r.trade IS NOT NULL) DESC
    LIMIT 1
$$;

ALTER TABLE case_file
    ADD COLUMN area_path text,                 -- the shop's area when the case opened (for the dashboard)
    ADD COLUMN escalated_at timestamptz,
    ADD COLUMN escalated_to_account_id bigint REFERENCES account (id),
    ADD COLUMN reported_count integer NOT NULL DEFAULT 1,
    ADD COLUMN created_by_account_id bigint REFERENCES account (id),
    ADD COLUMN lat double precision,
    ADD COLUMN lon double precision,
    ADD COLUMN via text NOT NULL DEFAULT 'web' CHECK (via IN ('web', 'api', 'open311', 'system'));
UPDATE case_file c SET area_path = a.path FROM shop s JOIN area a ON a.id = s.area_id WHERE s.id = c.shop_id;
UPDATE case_file SET department = case_department(shop_id, category) WHERE department IS NULL AND shop_id IS NOT NULL;
CREATE INDEX case_file_open_dup_idx ON case_file (shop_id, category, opened_at) WHERE status NOT IN ('resolved', 'closed');
CREATE INDEX case_file_area_idx ON case_file (area_path text_pattern_ops, opened_at);
CREATE INDEX case_file_assignee_idx ON case_file (assignee_account_id, status);
-- the dashboard reads every case of a period from this index alone
CREATE INDEX case_file_dashboard_idx ON case_file (opened_at)
    INCLUDE (department, area_path, status, closed_at, resolved_at, overdue, reopened_count);

-- every automatic signal (an inspection, an expired licence, a review, a news item, a drop of the
-- review average) is taken once: it opened a case or joined one
CREATE TABLE case_signal (
    key             text PRIMARY KEY,
    case_id         bigint NOT NULL REFERENCES case_file (id),
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inspection_bad_idx ON inspection (inspected_on) WHERE result IN ('rectify', 'fail');
CREATE INDEX review_posted_idx ON review (posted_at) WHERE deleted_at IS NULL;
CREATE INDEX sentiment_published_idx ON sentiment_item (published_at);

-- a later report of the same problem joins the open case; its reporter follows it by their own number
CREATE TABLE case_report (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id       text NOT NULL UNIQUE,
    case_id         bigint NOT NULL REFERENCES case_file (id),
    description     text,
    reporter_name   text,
    reporter_phone  text,
    reporter_email  text,
    photo_id        bigint REFERENCES upload (id),
    via             text NOT NULL DEFAULT 'web',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_report_case_idx ON case_report (case_id);

-- the trail of a case is append-only, like the audit trail
CREATE FUNCTION case_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_event is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER case_event_no_update BEFORE UPDATE OR DELETE ON case_event
    FOR EACH ROW EXECUTE FUNCTION case_event_append_only();
CREATE TRIGGER case_event_no_truncate BEFORE TRUNCATE ON case_event
    FOR EACH STATEMENT EXECUTE FUNCTION case_event_append_only();
ALTER TABLE case_event ADD COLUMN photo_id bigint REFERENCES upload (id);
-- a merchant's evidence of rectification is an upload of its own kind
ALTER TABLE upload DROP CONSTRAINT upload_purpose_check;
ALTER TABLE upload ADD CONSTRAINT upload_purpose_check
    CHECK (purpose IN ('licence', 'health_cert', 'honour', 'inspection', 'complaint', 'case_evidence'));

-- Open311 API keys (GeoReport v2 requires one for POST): only a hash is kept
CREATE TABLE open311_key (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    key_hash        bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz
);
