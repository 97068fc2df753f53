-- Webhook subscriptions for outside systems (merchant_code/webhooks.py): events about shops,
-- fanned out to the subscriptions that match them and delivered through the policy outbox.

-- a channel is a gateway (every policy push goes there too) or a subscription (only the events
-- it asked for, about the shops it asked for)
ALTER TABLE delivery_channel
    ADD COLUMN kind text NOT NULL DEFAULT 'gateway' CHECK (kind IN ('gateway', 'subscription')),
    ADD COLUMN events text[] NOT NULL DEFAULT '{}',
    ADD COLUMN area_path text,
    ADD COLUMN trade text REFERENCES trade (code),
    ADD COLUMN shop_id bigint REFERENCES shop (id),
    ADD COLUMN created_by bigint REFERENCES account (id),
    ADD CONSTRAINT subscription_events CHECK (kind = 'gateway' OR (cardinality(events) > 0 AND events <@
        ARRAY['grade_changed', 'licence_expired', 'case_opened', 'case_closed']::text[]));

-- what happened to a shop, waiting to be fanned out to the subscriptions
CREATE TABLE shop_event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id),
    kind            text NOT NULL CHECK (kind IN ('grade_changed', 'licence_expired', 'case_opened', 'case_closed')),
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail          jsonb NOT NULL DEFAULT '{}'
);

-- a grade that changed (every shop has a profile from its start, so a first grade is a change too);
-- statement-level, so a rebuild of a million profiles pays one insert
CREATE FUNCTION shop_event_grade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop_event (shop_id, kind, detail)
    SELECT n.shop_id, 'grade_changed',
           jsonb_build_object('from', o.grade, 'to', n.grade, 'grade_date', n.grade_date)
    FROM new_rows n JOIN old_rows o ON o.shop_id = n.shop_id
    WHERE o.grade IS DISTINCT FROM n.grade;
    RETURN NULL;
END
$$;
CREATE TRIGGER shop_profile_grade_event AFTER UPDATE ON shop_profile
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shop_event_grade();

CREATE FUNCTION shop_event_case_opened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop_event (shop_id, kind, detail)
    SELECT n.shop_id, 'case_opened',
           jsonb_build_object('case', n.request_id, 'category', n.category, 'source', n.source,
                              'department', n.department, 'due', n.sla_due_at)
    FROM new_rows n WHERE n.shop_id IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER case_file_opened_event AFTER INSERT ON case_file
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION shop_event_case_opened();

CREATE FUNCTION shop_event_case_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop_event (shop_id, kind, detail)
    SELECT n.shop_id, 'case_closed',
           jsonb_build_object('case', n.request_id, 'category', n.category, 'opened_at', n.opened_at,
                              'closed_at', n.closed_at)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.shop_id IS NOT NULL AND n.status = 'closed' AND o.status <> 'closed';
    RETURN NULL;
END
$$;
CREATE TRIGGER case_file_closed_event AFTER UPDATE ON case_file
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shop_event_case_closed();
