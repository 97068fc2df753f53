-- Rows that a URL or a response names get a public id of their own, like a policy or a licence:
-- the sequential id told a merchant how many messages the district sent (inbox item 761, so 760
-- and 762 exist) and let a manager walk the routing table by counting.

-- An inbox message. Channel rows get one too (a default costs less than a condition in every
-- insert of the outbox), but only inbox rows are ever looked up by it, so only they are indexed.
-- The volatile default gives every existing row its own value as the column is added.
ALTER TABLE delivery ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX delivery_public_id_idx ON delivery (public_id) WHERE channel = 'inbox';

-- A row of the case routing table (deleted by this id).
ALTER TABLE case_route ADD COLUMN public_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid();

-- The audit trail names a row by its chain hash (what `audit verify` and the checkpoints hold
-- to), and pages by it; the admin's page looks a cursor up by this index.
CREATE INDEX audit_event_hash_idx ON audit_event (hash);
