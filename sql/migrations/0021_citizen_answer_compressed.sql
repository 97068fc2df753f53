-- The citizen's answers are compressed in their row again (the default toast_tuple_target; body
-- stays STORAGE MAIN, so never moved out to TOAST). Kept whole, a 4.5 KB page filled an 8 KB heap
-- page on its own: at 1,000,000 shops the Chinese pages alone were 8 GB of heap that scans of
-- random shops read at random, more than the machine's page cache holds next to everything else.
-- Compressed (pglz, 4.5 KB -> about 2.6 KB) three share a page and all the answers fit in memory;
-- decompressing one costs the server about a microsecond. Rows already stored are compressed as
-- their profiles are rebuilt, or all at once by `VACUUM FULL citizen_answer`.
ALTER TABLE citizen_answer RESET (toast_tuple_target);
