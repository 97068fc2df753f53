-- Policy pushes (see merchant_code/policies.py): when a policy is next due, built-in reminders,
-- outbound channels, and what the outbox needs to deliver exactly once.

ALTER TABLE policy
    -- the next occurrence to send (a date, or the next firing of `cron`); NULL once nothing is due
    ADD COLUMN next_at timestamptz,
    ADD COLUMN last_sent_at timestamptz,
    -- a built-in reminder (licence_30, licence_7, licence_expired, rectify_due, health_cert): one row each
    ADD COLUMN reminder text UNIQUE,
    ADD COLUMN cancelled_at timestamptz;
DROP INDEX policy_due_idx;
CREATE INDEX policy_due_idx ON policy (next_at) WHERE status = 'scheduled';

-- An outbound channel (an SMS or messaging gateway): every delivery is also POSTed there as JSON
-- with an Idempotency-Key header (and an HMAC signature when a secret is set).
CREATE TABLE delivery_channel (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$' AND name <> 'inbox'),
    url             text NOT NULL CHECK (url ~ '^https?://'),
    secret          text,
    allow_private   boolean NOT NULL DEFAULT false,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE delivery
    ADD COLUMN detail jsonb,                 -- a reminder's particulars: which licence, which date
    ADD COLUMN read_by_account_id bigint REFERENCES account (id);
DROP INDEX delivery_claim_idx;
-- the workers' queue: inbox rows and channel rows are claimed separately
CREATE INDEX delivery_claim_idx ON delivery (channel, next_attempt_at) WHERE status IN ('pending', 'failed');

-- The shops a policy is for: its trades (none named: every trade) in its areas and every area
-- below them, never a closed shop, narrowed by its filters. One definition for the preview count
-- and for the outbox, so what a manager is shown is what is sent.
CREATE FUNCTION policy_audience(trades text[], area_ids bigint[], filters jsonb, today date)
RETURNS TABLE (shop_id bigint) LANGUAGE sql STABLE AS $$
    SELECT s.id
    FROM shop s
    WHERE s.area_id IN (
              SELECT below.id FROM area top JOIN area below
                ON below.path = top.path OR below.path LIKE top.path || '.%'
              WHERE top.id = ANY(area_ids))
      AND (cardinality(trades) = 0 OR s.trade = ANY(trades))
      AND s.status <> 'closed'
      AND (NOT filters ? 'grades' OR EXISTS (
              SELECT 1 FROM shop_profile p WHERE p.shop_id = s.id
                AND p.grade = ANY(ARRAY(SELECT jsonb_array_elements_text(filters -> 'grades')))))
      AND (NOT filters ? 'licence_expires_within_days' OR EXISTS (
              SELECT 1 FROM licence l WHERE l.shop_id = s.id AND l.status = 'active'
                AND l.valid_to BETWEEN today AND today + (filters ->> 'licence_expires_within_days')::int))
$$;
