-- When the notices joined to the citizen's views may have changed (notices.py), in commit order.
--
-- 0037's workers compared count(policy) and max(updated_at) to decide whether to read the notices
-- again. A send is one long transaction whose updated_at is the time it began: if another policy
-- changed while it ran, the send committed without moving either value, and its notice stayed
-- unseen until some other policy changed. One row, bumped by every statement that changes a
-- policy or an area: the bumps of concurrent transactions wait on the row, so its value rises in
-- the order they commit (a send bumps it in its last statement, so it holds the row only for its
-- commit).

CREATE TABLE notices_mark (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    n           bigint NOT NULL,
    changed_at  timestamptz NOT NULL  -- when it last moved (the public API's Last-Modified)
);
INSERT INTO notices_mark (n, changed_at) VALUES (1, clock_timestamp());

CREATE FUNCTION notices_mark_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE notices_mark SET n = n + 1, changed_at = clock_timestamp();
    RETURN NULL;
END
$$;
CREATE TRIGGER policy_notices_mark AFTER INSERT OR UPDATE OR DELETE ON policy
    FOR EACH STATEMENT EXECUTE FUNCTION notices_mark_bump();
CREATE TRIGGER area_notices_mark AFTER INSERT OR UPDATE OR DELETE ON area
    FOR EACH STATEMENT EXECUTE FUNCTION notices_mark_bump();

-- What was rendered before 0037 holds copies of every inbox notice, reminders included, until
-- its shop's rebuild (queued by 0037): a scan of such a shop renders it afresh instead, and the
-- documents of the change feed and the exports lose the copies now.
DELETE FROM citizen_answer WHERE audience IS NULL;
UPDATE shop_profile SET citizen_doc = citizen_doc - 'notices', private_doc = private_doc - 'notices'
WHERE citizen_doc ? 'notices' OR private_doc ? 'notices';
