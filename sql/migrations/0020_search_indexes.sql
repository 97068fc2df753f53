-- Search that keeps up at a million shops (bench/load_mix.py found both slow):
-- 1. names by any two characters: Chinese names are searched by two-character fragments, which a
--    trigram index cannot serve; an index of each name's bigrams can.
-- 2. nearest shops: the query now walks the KNN index in distance order (see public.sql), so no
--    other index is needed for it.

CREATE FUNCTION name_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(array_agg(DISTINCT lower(substr(t, i, 2))), '{}')
    FROM generate_series(1, length(t) - 1) AS i
$$;
CREATE INDEX shop_name_bigram_idx ON shop USING gin (name_bigrams(name));
CREATE INDEX shop_name_en_bigram_idx ON shop USING gin (name_bigrams(name_en)) WHERE name_en IS NOT NULL;
