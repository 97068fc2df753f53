-- An attempt is recorded before it is checked, so parallel guesses count against each other:
-- each attempt counts only the attempts recorded before it (by id) within the window.
ALTER TABLE auth_attempt ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX auth_attempt_key_id_idx ON auth_attempt (key, id);
DROP INDEX auth_attempt_key_idx;

COMMENT ON COLUMN shop.claim_code_hash IS
    'SHA-256 of the one-time claim code (80 random bits, so no slow hash is needed); NULL once used';
