-- A run holds its source by a lease in the source's row instead of an advisory lock held on a
-- second connection for the whole run: a run then needs one connection, and ten sources due at
-- once can no longer take every connection of the pool while each waits for one more. A lease
-- left by a process that died runs out by itself.
ALTER TABLE feed_source ADD COLUMN leased_until timestamptz;
