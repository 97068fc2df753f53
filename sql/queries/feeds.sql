-- The feed runner's statements: every write is set-based over arrays of one page's records.

-- name: get_feed_source(name)^
SELECT id, kind, name, url, config, enabled, cursor, failures, paused_until, interval_seconds
FROM feed_source WHERE name = :name;

-- name: list_feed_sources()
SELECT id, kind, name, url, enabled, interval_seconds, failures, paused_until, last_success_at, cursor
FROM feed_source ORDER BY name;

-- name: lease_feed_source(id, seconds)$
UPDATE feed_source SET leased_until = now() + make_interval(secs => :seconds)
WHERE id = :id AND (leased_until IS NULL OR leased_until < now())
RETURNING id;

-- name: release_feed_source(id)!
UPDATE feed_source SET leased_until = NULL WHERE id = :id;

-- name: set_feed_source_enabled(name, enabled)$
UPDATE feed_source SET enabled = :enabled WHERE name = :name RETURNING id;

-- name: delete_feed_source(name)$
WITH gone AS (SELECT id FROM feed_source WHERE name = :name),
     rejects AS (DELETE FROM feed_reject WHERE source_id IN (SELECT id FROM gone)),
     mapping AS (DELETE FROM feed_shop_map WHERE source_id IN (SELECT id FROM gone)),
     runs AS (DELETE FROM feed_run WHERE source_id IN (SELECT id FROM gone))
SELECT id FROM gone;

-- name: delete_feed_source_row(id)!
DELETE FROM feed_source WHERE id = :id;

-- name: create_feed_run(source_id)$
INSERT INTO feed_run (source_id) VALUES (:source_id) RETURNING id;

-- name: add_to_feed_run(id, fetched, inserted, updated, unchanged, quarantined)!
UPDATE feed_run SET fetched = fetched + :fetched, inserted = inserted + :inserted, updated = updated + :updated,
                    unchanged = unchanged + :unchanged, quarantined = quarantined + :quarantined
WHERE id = :id;

-- name: finish_feed_run(id, status, error)!
UPDATE feed_run SET status = :status, error = :error, finished_at = now() WHERE id = :id;

-- name: set_feed_cursor(id, cursor)!
UPDATE feed_source SET cursor = :cursor WHERE id = :id;

-- name: feed_source_succeeded(id)!
UPDATE feed_source SET failures = 0, paused_until = NULL, last_success_at = now() WHERE id = :id;

-- name: feed_source_failed(id, pause_after, pause_seconds)$
UPDATE feed_source SET failures = failures + 1,
       paused_until = CASE WHEN failures + 1 >= :pause_after
                           THEN now() + make_interval(secs => :pause_seconds * (failures + 2 - :pause_after))
                           ELSE paused_until END
WHERE id = :id
RETURNING failures;

-- name: create_feed_rejects(run_id, source_id, record_keys, reasons, kinds, external_ids, raws, counts)!
-- A page's rejects, one row per (source, record key, reason): one met again is counted (and
-- waits again if it had been resolved), never added twice. The runner gives each key once.
INSERT INTO feed_reject AS j (run_id, source_id, record_key, reason, kind, external_id, raw_bytes, seen_count,
                              last_run_id, last_seen_at)
SELECT :run_id, :source_id, k, why, kd, e, r, n, :run_id, now()
FROM unnest(:record_keys::text[], :reasons::text[], :kinds::text[], :external_ids::text[], :raws::bytea[],
            :counts::int[]) AS u(k, why, kd, e, r, n)
ON CONFLICT (source_id, record_key, reason) DO UPDATE SET
    seen_count = j.seen_count + excluded.seen_count, last_run_id = excluded.last_run_id, last_seen_at = now(),
    raw_bytes = excluded.raw_bytes, external_id = excluded.external_id, kind = coalesce(excluded.kind, j.kind),
    resolved_at = NULL, resolved_run_id = NULL;

-- name: resolve_shops(source_id, business_ids, usccs, licence_numbers, names, addresses)
-- For each record (by position), the shop it is about and how it was found: the source's own
-- mapping first, then the USCC, a licence number, and a name and address that match exactly.
SELECT u.n, coalesce(m.shop_id, by_uscc.id, by_licence.shop_id, by_name.id) AS shop_id,
       CASE WHEN m.shop_id IS NOT NULL THEN 'business_id'
            WHEN by_uscc.id IS NOT NULL THEN 'uscc'
            WHEN by_licence.shop_id IS NOT NULL THEN 'licence_number'
            WHEN by_name.id IS NOT NULL THEN 'name_address' END AS matched_by
FROM unnest(:business_ids::text[], :usccs::text[], :licence_numbers::text[], :names::text[], :addresses::text[])
     WITH ORDINALITY AS u(business_id, uscc, licence_number, name, address, n)
LEFT JOIN feed_shop_map m ON m.source_id = :source_id AND m.business_id = u.business_id
LEFT JOIN shop by_uscc ON by_uscc.uscc = u.uscc
-- (each lookup tests its own key for NULL first, so a record without one costs no scan)
-- A licence number names the shop of a live licence first (active, not expired), else of any
-- licence with it; one that names two shops at that tier names none (name and address decide).
LEFT JOIN LATERAL (SELECT CASE WHEN count(DISTINCT l.shop_id) = 1 THEN min(l.shop_id) END AS shop_id
                   FROM licence l
                   WHERE u.licence_number IS NOT NULL AND l.number = u.licence_number
                   GROUP BY l.status = 'active' AND (l.valid_to IS NULL OR l.valid_to >= current_date)
                   ORDER BY l.status = 'active' AND (l.valid_to IS NULL OR l.valid_to >= current_date) DESC
                   LIMIT 1) by_licence ON true
LEFT JOIN LATERAL (SELECT s.id FROM shop s
                   WHERE u.name IS NOT NULL AND u.address IS NOT NULL AND s.name = u.name AND s.address = u.address
                   ORDER BY s.id LIMIT 1) by_name ON true
ORDER BY u.n;

-- name: upsert_shop_map(source_id, business_ids, shop_ids, matched_bys)
WITH up AS (
    INSERT INTO feed_shop_map AS m (source_id, business_id, shop_id, matched_by)
    SELECT :source_id, b, s, w FROM unnest(:business_ids::text[], :shop_ids::bigint[], :matched_bys::text[]) AS u(b, s, w)
    ON CONFLICT (source_id, business_id) DO UPDATE SET shop_id = excluded.shop_id, matched_by = excluded.matched_by,
                                                     learned_at = now()
    WHERE m.shop_id IS DISTINCT FROM excluded.shop_id
    RETURNING (xmax = 0) AS inserted
)
SELECT inserted FROM up;

-- name: upsert_inspections(source, external_ids, shop_ids, dates, kinds, scores, score_scales, results, grades, summaries, updated_ats, content_keys)
-- Insert or update by (source, external_id); a version older than the stored one, or identical
-- to it, is left alone (not returned: the runner counts it as unchanged). A score is stored with
-- its scale, and no scale without a score; an unknown result stays NULL.
WITH up AS (
    INSERT INTO inspection AS i (shop_id, source, external_id, inspected_on, kind, score, score_scale, result,
                                 grade, summary, source_updated_at, content_key, fetched_at)
    SELECT s, :source, e, d, coalesce(k, 'routine'), sc, CASE WHEN sc IS NOT NULL THEN coalesce(ss, 'lives_0_100') END,
           r, g, sm, ua, ck, now()
    FROM unnest(:external_ids::text[], :shop_ids::bigint[], :dates::date[], :kinds::text[], :scores::numeric[],
                :score_scales::text[], :results::text[], :grades::text[], :summaries::text[],
                :updated_ats::timestamptz[], :content_keys::text[])
         AS u(e, s, d, k, sc, ss, r, g, sm, ua, ck)
    ON CONFLICT (source, external_id) DO UPDATE SET
        shop_id = excluded.shop_id, inspected_on = excluded.inspected_on, kind = excluded.kind,
        score = excluded.score, score_scale = excluded.score_scale, result = excluded.result,
        grade = excluded.grade, summary = excluded.summary, source_updated_at = excluded.source_updated_at,
        content_key = excluded.content_key, fetched_at = now()
    WHERE (i.source_updated_at IS NULL OR excluded.source_updated_at IS NULL
           OR excluded.source_updated_at >= i.source_updated_at)
      AND (i.shop_id, i.inspected_on, i.kind, i.score, i.score_scale, i.result, i.grade, i.summary, i.content_key)
          IS DISTINCT FROM (excluded.shop_id, excluded.inspected_on, excluded.kind, excluded.score,
                            excluded.score_scale, excluded.result, excluded.grade, excluded.summary,
                            excluded.content_key)
    RETURNING i.id, i.external_id, (xmax = 0) AS inserted
)
SELECT id, external_id, inserted FROM up;

-- name: replace_violations(inspection_ids, codes, descriptions, criticals)!
-- The violations of inspections just inserted or changed, replaced as a whole. A violation whose
-- feed does not say whether it is critical stays unknown (NULL).
WITH gone AS (DELETE FROM violation WHERE inspection_id = ANY(:inspection_ids::bigint[]))
INSERT INTO violation (inspection_id, code, description, critical)
SELECT i, coalesce(c, ''), d, cr
FROM unnest(:inspection_ids::bigint[], :codes::text[], :descriptions::text[], :criticals::bool[]) AS u(i, c, d, cr)
WHERE d IS NOT NULL;

-- name: upsert_licences(source, external_ids, shop_ids, numbers, kinds, holder_usccs, issued_ons, valid_froms, valid_tos, statuses, updated_ats)
WITH up AS (
    INSERT INTO licence AS l (shop_id, source, external_id, number, kind, holder_uscc, issued_on, valid_from,
                              valid_to, status, source_updated_at, fetched_at, updated_at)
    SELECT s, :source, e, num, k, h, io, vf, vt, st, ua, now(), now()
    FROM unnest(:external_ids::text[], :shop_ids::bigint[], :numbers::text[], :kinds::text[], :holder_usccs::text[],
                :issued_ons::date[], :valid_froms::date[], :valid_tos::date[], :statuses::text[],
                :updated_ats::timestamptz[]) AS u(e, s, num, k, h, io, vf, vt, st, ua)
    ON CONFLICT (source, external_id) DO UPDATE SET
        shop_id = excluded.shop_id, number = excluded.number, kind = excluded.kind,
        holder_uscc = excluded.holder_uscc, issued_on = excluded.issued_on, valid_from = excluded.valid_from,
        valid_to = excluded.valid_to, status = excluded.status, source_updated_at = excluded.source_updated_at,
        fetched_at = now(), updated_at = now()
    WHERE (l.source_updated_at IS NULL OR excluded.source_updated_at IS NULL
           OR excluded.source_updated_at >= l.source_updated_at)
      AND (l.shop_id, l.number, l.kind, l.holder_uscc, l.issued_on, l.valid_from, l.valid_to, l.status)
          IS DISTINCT FROM (excluded.shop_id, excluded.number, excluded.kind, excluded.holder_uscc,
                            excluded.issued_on, excluded.valid_from, excluded.valid_to, excluded.status)
    RETURNING (xmax = 0) AS inserted
)
SELECT inserted FROM up;

-- name: upsert_reviews(source, external_ids, shop_ids, ratings, bodies, authors, posted_ats, edited_ats, deleteds, updated_ats)
WITH up AS (
    INSERT INTO review AS r (shop_id, source, external_id, rating, body, author_alias, posted_at, edited_at,
                             deleted_at, source_updated_at, fetched_at)
    SELECT s, :source, e, rt, b, a, p, ed, CASE WHEN del THEN now() END, ua, now()
    FROM unnest(:external_ids::text[], :shop_ids::bigint[], :ratings::int2[], :bodies::text[], :authors::text[],
                :posted_ats::timestamptz[], :edited_ats::timestamptz[], :deleteds::bool[], :updated_ats::timestamptz[])
         AS u(e, s, rt, b, a, p, ed, del, ua)
    ON CONFLICT (source, external_id) DO UPDATE SET
        shop_id = excluded.shop_id, rating = excluded.rating, body = excluded.body,
        author_alias = excluded.author_alias, posted_at = excluded.posted_at, edited_at = excluded.edited_at,
        deleted_at = CASE WHEN excluded.deleted_at IS NULL THEN NULL ELSE coalesce(r.deleted_at, excluded.deleted_at) END,
        source_updated_at = excluded.source_updated_at, fetched_at = now()
    WHERE (r.source_updated_at IS NULL OR excluded.source_updated_at IS NULL
           OR excluded.source_updated_at >= r.source_updated_at)
      AND (r.shop_id, r.rating, r.body, r.author_alias, r.posted_at, r.edited_at, r.deleted_at IS NULL)
          IS DISTINCT FROM (excluded.shop_id, excluded.rating, excluded.body, excluded.author_alias,
                            excluded.posted_at, excluded.edited_at, excluded.deleted_at IS NULL)
    RETURNING (xmax = 0) AS inserted
)
SELECT inserted FROM up;

-- name: upsert_sentiment(source, external_ids, shop_ids, titles, urls, summaries, published_ats, tones, confidences)
WITH up AS (
    INSERT INTO sentiment_item AS x (shop_id, source, external_id, title, url, summary, published_at, tone,
                                     match_confidence, fetched_at)
    SELECT s, :source, e, t, u2, sm, p, tn, c, now()
    FROM unnest(:external_ids::text[], :shop_ids::bigint[], :titles::text[], :urls::text[], :summaries::text[],
                :published_ats::timestamptz[], :tones::text[], :confidences::real[]) AS u(e, s, t, u2, sm, p, tn, c)
    ON CONFLICT (source, external_id) DO UPDATE SET
        shop_id = excluded.shop_id, title = excluded.title, url = excluded.url, summary = excluded.summary,
        published_at = excluded.published_at, tone = excluded.tone, match_confidence = excluded.match_confidence,
        fetched_at = now()
    WHERE (x.shop_id, x.title, x.url, x.summary, x.published_at, x.tone, x.match_confidence)
          IS DISTINCT FROM (excluded.shop_id, excluded.title, excluded.url, excluded.summary,
                            excluded.published_at, excluded.tone, excluded.match_confidence)
    RETURNING (xmax = 0) AS inserted
)
SELECT inserted FROM up;

-- name: create_feed_source(kind, name, url, config, interval_seconds)$
INSERT INTO feed_source (kind, name, url, config, interval_seconds)
VALUES (:kind, :name, :url, :config, :interval_seconds)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url, config = excluded.config,
                                 interval_seconds = excluded.interval_seconds
RETURNING id;

-- name: feed_status()
-- Each source with its last run, how stale its data is and what waits in quarantine.
SELECT s.name, s.kind, s.enabled, s.interval_seconds, s.failures, s.paused_until, s.last_success_at,
       now() - s.last_success_at AS lag,
       r.started_at, r.finished_at, r.status, r.fetched, r.inserted, r.updated, r.unchanged, r.quarantined, r.error,
       (SELECT count(*) FROM feed_reject j WHERE j.source_id = s.id AND j.resolved_at IS NULL) AS rejects
FROM feed_source s
LEFT JOIN LATERAL (SELECT * FROM feed_run x WHERE x.source_id = s.id ORDER BY x.id DESC LIMIT 1) r ON true
ORDER BY s.name;

-- name: delete_reviews(source, external_ids, updated_ats)
-- Tombstones: the platform says a review is gone without repeating it. Marks the stored review
-- deleted (never older news over newer); a review never seen is nothing to delete.
UPDATE review r SET deleted_at = now(), source_updated_at = u.ua, fetched_at = now()
FROM unnest(:external_ids::text[], :updated_ats::timestamptz[]) AS u(e, ua)
WHERE r.source = :source AND r.external_id = u.e AND r.deleted_at IS NULL
  AND (r.source_updated_at IS NULL OR u.ua IS NULL OR u.ua >= r.source_updated_at)
RETURNING false AS inserted;

-- name: get_last_feed_run_start(source_id)$
SELECT max(started_at) FROM feed_run WHERE source_id = :source_id;

-- name: get_feed_source_unstable_ids(name)$
SELECT unstable_ids FROM feed_source WHERE name = :name;

-- name: find_moved_inspections(source, external_ids, content_keys)$
-- Whether a visit on this page is stored under another external id of the source (its ids are
-- row counters that moved when the publisher re-sorted): a stored row with one of the page's
-- content keys whose id the page does not give with that key.
WITH page AS MATERIALIZED (
    SELECT e, c FROM unnest(:external_ids::text[], :content_keys::text[]) AS u(e, c) WHERE c IS NOT NULL
)
SELECT EXISTS (
    SELECT 1 FROM inspection i
    JOIN (SELECT DISTINCT c FROM page) k ON i.source = :source AND i.content_key = k.c
    LEFT JOIN page p ON p.c = i.content_key AND p.e = i.external_id
    WHERE p.e IS NULL
);

-- name: rekey_inspections_by_content(source)!
-- From now on the source's inspections are keyed by content (`ck:KEY|n`, as base.by_content
-- numbers them): its stored rows take those ids, so the next pages find them instead of adding
-- them again. Rows keyed by content already keep their number.
WITH numbered AS (
    SELECT id, external_id, 'ck:' || content_key || '|'
             || row_number() OVER (PARTITION BY content_key ORDER BY external_id LIKE 'ck:%' DESC, external_id, id)
             AS new_id
    FROM inspection WHERE source = :source AND content_key IS NOT NULL
),
flagged AS (UPDATE feed_source SET unstable_ids = true WHERE name = :source)
UPDATE inspection i SET external_id = n.new_id
FROM numbered n WHERE i.id = n.id AND n.external_id NOT LIKE 'ck:%';

-- name: resolve_feed_rejects(run_id, source_id, kind, external_ids)!
-- Records just stored: the rejects waiting under their external ids are resolved (kept as
-- history). A parser's reject (no kind) is resolved by any record but a shop record, whose id
-- is a business id, not the id of the record that was refused.
UPDATE feed_reject j SET resolved_at = now(), resolved_run_id = :run_id
FROM unnest(:external_ids::text[]) AS u(e)
WHERE j.source_id = :source_id AND j.resolved_at IS NULL AND j.external_id = u.e
  AND (j.kind = :kind OR (j.kind IS NULL AND :kind <> 'shop'));

-- name: list_feed_runs(source_id, n)
-- A source's last runs, newest first.
SELECT id, started_at, finished_at, status, fetched, inserted, updated, unchanged, quarantined, error
FROM feed_run WHERE source_id = :source_id ORDER BY id DESC LIMIT :n;

-- name: list_feed_reject_reasons(source_id, samples)
-- What waits in a source's quarantine, grouped by reason: how many records, how often they were
-- seen, and a few samples (the most recently seen) of each.
SELECT reason, count(*) AS records, sum(seen_count) AS seen, max(last_seen_at) AS last_seen_at,
       (SELECT jsonb_agg(jsonb_build_object('external_id', x.external_id, 'seen', x.seen_count,
                                            'raw', encode(x.raw, 'base64')))
        FROM (SELECT y.external_id, y.seen_count, substring(coalesce(y.raw_bytes, convert_to(y.raw, 'UTF8')) FROM 1 FOR 400) AS raw
              FROM feed_reject y
              WHERE y.source_id = :source_id AND y.reason = j.reason AND y.resolved_at IS NULL
              ORDER BY y.last_seen_at DESC, y.id DESC LIMIT :samples) x) AS samples
FROM feed_reject j
WHERE j.source_id = :source_id AND j.resolved_at IS NULL
GROUP BY reason
ORDER BY count(*) DESC, reason;

-- name: count_resolved_feed_rejects(source_id)$
SELECT count(*) FROM feed_reject WHERE source_id = :source_id AND resolved_at IS NOT NULL;

-- name: list_shops_by_codes(codes)
SELECT id, code, name FROM shop WHERE code = ANY(:codes::text[]);

-- name: upsert_manual_shop_maps(source_id, business_ids, shop_ids)
-- Mappings a person made (feeds map): added, or replacing what was learned or mapped before;
-- answers each with the shop it named before, if any (for the audit trail).
WITH given AS (SELECT b, s FROM unnest(:business_ids::text[], :shop_ids::bigint[]) AS u(b, s)),
     before AS (SELECT m.business_id, p.code FROM feed_shop_map m JOIN shop p ON p.id = m.shop_id
                WHERE m.source_id = :source_id AND m.business_id IN (SELECT b FROM given)),
     up AS (INSERT INTO feed_shop_map AS m (source_id, business_id, shop_id, matched_by, confidence)
            SELECT :source_id, b, s, 'manual', 1 FROM given
            ON CONFLICT (source_id, business_id) DO UPDATE SET shop_id = excluded.shop_id, matched_by = 'manual',
                                                             confidence = 1, learned_at = now()
            RETURNING m.business_id)
SELECT up.business_id, before.code AS previous FROM up LEFT JOIN before USING (business_id);

-- name: list_unmatched_feed_rejects(source_id)
-- What waits in quarantine because no shop matched it (the runner keeps such a record as JSON).
SELECT external_id, reason, raw_bytes FROM feed_reject
WHERE source_id = :source_id AND resolved_at IS NULL AND reason LIKE 'no shop in the register matches%'
ORDER BY id;

-- name: list_mapped_business_ids(source_id, business_ids)
SELECT business_id FROM feed_shop_map WHERE source_id = :source_id AND business_id = ANY(:business_ids::text[]);

-- name: list_shop_candidates(names, addresses, lats, lons)
-- For each waiting business (by position) the shop most like it: one at the same address, else
-- the most similar name (shared two-character fragments, Jaccard at least 0.3), else the nearest
-- within about 300 m. Each lookup walks its own index.
SELECT u.n, c.code, c.name, c.address, c.why
FROM unnest(:names::text[], :addresses::text[], :lats::float8[], :lons::float8[])
     WITH ORDINALITY AS u(name, address, lat, lon, n)
LEFT JOIN LATERAL (
    SELECT code, name, address, why FROM (
        (SELECT s.code, s.name, s.address, 'same address' AS why, 0 AS rank FROM shop s
         WHERE u.address IS NOT NULL AND s.address = u.address ORDER BY s.id LIMIT 1)
        UNION ALL
        (SELECT x.code, x.name, x.address, 'similar name', 1 FROM (
             SELECT s.id, s.code, s.name, s.address,
                    cardinality(ARRAY(SELECT unnest(name_bigrams(s.name)) INTERSECT SELECT unnest(name_bigrams(u.name))))::float8
                    / greatest(cardinality(ARRAY(SELECT unnest(name_bigrams(s.name)) UNION SELECT unnest(name_bigrams(u.name)))), 1)
                    AS likeness
             FROM shop s
             WHERE u.name IS NOT NULL AND name_bigrams(s.name) && name_bigrams(u.name)) x
         WHERE x.likeness >= 0.3 ORDER BY x.likeness DESC, x.id LIMIT 1)
        UNION ALL
        (SELECT y.code, y.name, y.address, 'nearby', 2 FROM (
             SELECT s.code, s.name, s.address, point(s.lon, s.lat) <-> point(u.lon, u.lat) AS degrees
             FROM shop s
             WHERE u.lat IS NOT NULL AND u.lon IS NOT NULL AND s.lat IS NOT NULL AND s.lon IS NOT NULL
             ORDER BY point(s.lon, s.lat) <-> point(u.lon, u.lat) LIMIT 1) y
         WHERE y.degrees < 0.003)
    ) found ORDER BY rank LIMIT 1
) c ON true
ORDER BY u.n;
