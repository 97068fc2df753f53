-- A case's public id was its first reporter's tracking number, so everyone who saw the case (its
-- staff, the shop's owner in their case list and profile) held the reporter's proof: enough to
-- read the notes meant for the reporter and to reopen the case. Now a case has a number of its
-- own for staff and the shop, and tracking numbers are the reporters' alone: the first reporter's
-- in case_file.tracking_number, a joined reporter's in case_report.public_id (as before).

-- `CS-` and ten Crockford symbols, 50 random bits like a tracking number (`TS-`): unguessable, and
-- never the sequential id. The bits are a v4 UUID's (pg_strong_random); bytes 6 and 8 hold its
-- version and variant and are left out, and a byte's low five bits are one uniform symbol.
CREATE FUNCTION new_case_number() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'CS-' || string_agg(CASE WHEN t.n = 6 THEN '-' ELSE '' END
                               || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', get_byte(u.b, t.i) % 32 + 1, 1),
                               '' ORDER BY t.n)
    FROM (SELECT uuid_send(gen_random_uuid()) AS b) u,
         unnest(ARRAY[0, 1, 2, 3, 4, 5, 9, 10, 11, 12]) WITH ORDINALITY AS t(i, n)
$$;

ALTER TABLE case_file ADD COLUMN tracking_number text UNIQUE;  -- the first reporter's; NULL: none
COMMENT ON COLUMN case_file.public_id IS 'the case''s own number, for staff and the shop; never a reporter''s';

CREATE TEMPORARY TABLE case_renumbered ON COMMIT DROP AS
    SELECT id, public_id AS old_id, new_case_number() AS new_id FROM case_file;
CREATE INDEX ON case_renumbered (old_id);
ANALYZE case_renumbered;

-- A complaint's old number was handed to its reporter (the page, the API, Open311's notice) and
-- stays theirs. Other cases' numbers were only ever seen by staff: nobody follows them.
-- (The update marks these shops' profiles for rebuild through case_file's trigger.)
UPDATE case_file c
SET public_id = r.new_id, tracking_number = CASE WHEN c.source = 'complaint' THEN r.old_id END
FROM case_renumbered r WHERE r.id = c.id;
ALTER TABLE case_file ALTER COLUMN public_id SET DEFAULT new_case_number();

-- The owner's stored documents list the shop's open cases by number: renumbered now, so that no
-- owner reads a tracking number before the rebuild comes round.
UPDATE shop_profile p SET private_doc = jsonb_set(p.private_doc, '{cases}', (
    SELECT coalesce(jsonb_agg(CASE WHEN r.new_id IS NULL THEN e.x ELSE jsonb_set(e.x, '{id}', to_jsonb(r.new_id)) END
                              ORDER BY e.n), '[]'::jsonb)
    FROM jsonb_array_elements(p.private_doc -> 'cases') WITH ORDINALITY AS e(x, n)
    LEFT JOIN case_renumbered r ON r.old_id = e.x ->> 'id'))
WHERE jsonb_typeof(p.private_doc -> 'cases') = 'array' AND p.private_doc -> 'cases' <> '[]'::jsonb;

-- so do the overdue-rectification reminders in the shops' inboxes
UPDATE delivery d SET detail = jsonb_set(d.detail, '{case}', to_jsonb(r.new_id))
FROM case_renumbered r
WHERE d.detail ->> 'case' = r.old_id
  AND d.policy_id IN (SELECT id FROM policy WHERE reminder = 'rectification_overdue');
