-- The shop profile's inputs: uploads, merchant submissions awaiting verification, violation
-- codes, merchant replies; and triggers that mark a shop's profile for rebuild whenever any of
-- its inputs change, set-based (one statement-level trigger per table and event).

-- Images people send: certificates, inspection photos, complaint photos. Kept in the database so
-- that a backup holds them; type and size are checked before they get here.
CREATE TABLE upload (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id       uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    shop_id         bigint REFERENCES shop (id),
    purpose         text NOT NULL CHECK (purpose IN ('licence', 'health_cert', 'honour', 'inspection', 'complaint')),
    content_type    text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size            integer NOT NULL CHECK (size BETWEEN 1 AND 5242880),
    sha256          bytea NOT NULL,
    data            bytea NOT NULL,
    account_id      bigint REFERENCES account (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_shop_idx ON upload (shop_id);

-- Codes an inspector picks violations from (China's catering food-safety inspection items).
CREATE TABLE violation_code (
    code            text PRIMARY KEY CHECK (code ~ '^V[0-9]{2}$'),
    description     text NOT NULL,
    description_en  text NOT NULL,
    critical        boolean NOT NULL DEFAULT false
);
INSERT INTO violation_code (code, description, description_en, critical) VALUES
    ('V01', '从业人员未持有效健康证明上岗', 'Staff working without a valid health certificate', true),
    ('V02', '未按规定公示食品经营许可证', 'Food business licence not displayed', false),
    ('V03', '食品原料未索证索票、进货查验记录不全', 'Incomplete supplier certificates or purchase records', false),
    ('V04', '使用超过保质期的食品原料', 'Ingredients past their use-by date', true),
    ('V05', '餐饮具未按规定清洗消毒', 'Tableware not cleaned and disinfected', true),
    ('V06', '防蝇防鼠防虫设施不到位', 'No adequate protection against flies, rodents and insects', false),
    ('V07', '食品贮存生熟混放', 'Raw and cooked food stored together', true),
    ('V08', '加工场所环境卫生不整洁', 'Kitchen or preparation area not clean', false),
    ('V09', '冷藏设施温度不符合要求', 'Cold storage at the wrong temperature', false),
    ('V10', '食品添加剂未专柜存放、未记录使用', 'Food additives not stored apart or not logged', false),
    ('V11', '从业人员未穿戴清洁工作衣帽', 'Staff without clean work clothes and caps', false),
    ('V12', '未建立食品安全自查制度', 'No food-safety self-inspection routine', false);

-- Licences: public ids for the routes, and the verification of what a merchant submits.
ALTER TABLE licence
    ADD COLUMN public_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    ADD COLUMN issuing_body text,
    ADD COLUMN image_id bigint REFERENCES upload (id),
    ADD COLUMN submitted_by bigint REFERENCES account (id),
    ADD COLUMN reviewed_by bigint REFERENCES account (id),
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN review_note text;
ALTER TABLE licence DROP CONSTRAINT licence_status_check;
ALTER TABLE licence ADD CONSTRAINT licence_status_check CHECK (status IN (
    'active', 'pending_verification', 'rejected', 'suspended', 'revoked', 'cancelled'));
CREATE INDEX licence_pending_idx ON licence (shop_id) WHERE status = 'pending_verification';

-- Staff health certificates enter as submitted and count once verified, like licences.
ALTER TABLE staff
    ADD COLUMN public_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    ADD COLUMN cert_status text NOT NULL DEFAULT 'verified'
        CHECK (cert_status IN ('verified', 'pending_verification', 'rejected')),
    ADD COLUMN cert_image_id bigint REFERENCES upload (id),
    ADD COLUMN reviewed_by bigint REFERENCES account (id),
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN review_note text;
CREATE INDEX staff_pending_idx ON staff (shop_id) WHERE cert_status = 'pending_verification';

-- Honours a merchant claims are shown once verified; `rejected_at` marks a refused one.
ALTER TABLE honour
    ADD COLUMN public_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    ADD COLUMN image_id bigint REFERENCES upload (id),
    ADD COLUMN reviewed_by bigint REFERENCES account (id),
    ADD COLUMN rejected_at timestamptz,
    ADD COLUMN review_note text;
CREATE INDEX honour_pending_idx ON honour (shop_id) WHERE NOT verified AND rejected_at IS NULL;

-- Inspections: a public id, a photo, and the merchant's one reply shown beside the grade.
ALTER TABLE inspection
    ADD COLUMN public_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    ADD COLUMN photo_id bigint REFERENCES upload (id),
    ADD COLUMN merchant_reply text CHECK (length(merchant_reply) <= 2000),
    ADD COLUMN merchant_replied_at timestamptz;

ALTER TABLE case_file ADD COLUMN photo_id bigint REFERENCES upload (id);

-- The profile's inputs mark it dirty; the worker rebuilds dirty profiles set-based.
CREATE FUNCTION profile_dirty_by_shop_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT shop_id FROM changed_rows WHERE shop_id IS NOT NULL
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION profile_dirty_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT id FROM changed_rows
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION profile_dirty_by_inspection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT i.shop_id FROM changed_rows c JOIN inspection i ON i.id = c.inspection_id
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION profile_dirty_by_code() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id)
    SELECT DISTINCT s.id FROM changed_rows c JOIN shop s ON s.code = c.code
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('shop', 'profile_dirty_by_id'),
        ('licence', 'profile_dirty_by_shop_id'),
        ('inspection', 'profile_dirty_by_shop_id'),
        ('review', 'profile_dirty_by_shop_id'),
        ('sentiment_item', 'profile_dirty_by_shop_id'),
        ('honour', 'profile_dirty_by_shop_id'),
        ('staff', 'profile_dirty_by_shop_id'),
        ('case_file', 'profile_dirty_by_shop_id'),
        ('delivery', 'profile_dirty_by_shop_id'),
        ('violation', 'profile_dirty_by_inspection'),
        ('qr_revocation', 'profile_dirty_by_code')
    ) AS t(tbl, fn) LOOP
        EXECUTE format('CREATE TRIGGER %1$s_dirty_ins AFTER INSERT ON %1$I REFERENCING NEW TABLE AS changed_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', spec.tbl, spec.fn);
        EXECUTE format('CREATE TRIGGER %1$s_dirty_upd AFTER UPDATE ON %1$I REFERENCING NEW TABLE AS changed_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', spec.tbl, spec.fn);
        EXECUTE format('CREATE TRIGGER %1$s_dirty_del AFTER DELETE ON %1$I REFERENCING OLD TABLE AS changed_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', spec.tbl, spec.fn);
    END LOOP;
END
$$;

-- What every role's view of a profile needs without another read: the area path for the access
-- check and the shop's code for revocation and caching.
ALTER TABLE shop_profile
    ADD COLUMN code text,
    ADD COLUMN area_path text;
CREATE UNIQUE INDEX shop_profile_code_idx ON shop_profile (code);

-- Existing shops (a database migrated with data in it) get their profiles built.
INSERT INTO profile_dirty (shop_id) SELECT id FROM shop ON CONFLICT DO NOTHING;
