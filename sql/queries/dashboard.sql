-- The supervision dashboard (merchant_code/dashboard.py): how the cases of a period fared.

-- name: dashboard_figures(start, end, prefix, below, part, grp)
-- One row per group (a department, or an area one level below the scope) and a total row
-- (is_total), over the cases opened in [start, end) inside the scope: the cases whose area path
-- is `prefix` or starts with `below` (prefix || '.'); every case for a NULL prefix. Grouped by
-- area, the group is the code at segment `part` of the case's area path (the segment after the
-- prefix; '' for a case filed at the scope's own area, which is answered under that area's code).
-- Every column read is in case_file_dashboard_idx. The group key is compared bytewise (COLLATE
-- "C": codes are ASCII), and the prefix arrives ready-made, so that a generic plan does no
-- string building per row. Groups with no case in the period are still listed (with zeros).
--   closed:        reached resolved or closed (and is there now: a reopened case is open again)
--   hours:         from opening to the resolution (resolved_at, else closed_at), closed cases only
--   overdue:       marked overdue by the escalation (the flag stays once set)
--   overdue_open:  overdue and not closed yet
--   resolved_ever: closed now, or reopened (a case is reopened only after a resolution)
WITH scoped AS (
    SELECT c.status IN ('resolved', 'closed') AS done,
           c.overdue,
           c.reopened_count > 0 AS reopened,
           CASE WHEN c.status IN ('resolved', 'closed')
                THEN date_part('epoch', coalesce(c.resolved_at, c.closed_at) - c.opened_at) / 3600.0
           END AS hours,
           CASE WHEN :grp::text = 'department' THEN c.department
                ELSE split_part(c.area_path, '.', :part::int)
           END COLLATE "C" AS gkey
    FROM case_file c
    WHERE c.opened_at >= :start AND c.opened_at < :end
      AND (:prefix::text IS NULL OR c.area_path = :prefix OR starts_with(c.area_path, :below::text))
),
figs AS (
    SELECT gkey,
           grouping(gkey) = 1 AS is_total,
           count(*) AS opened,
           count(*) FILTER (WHERE done) AS closed,
           count(*) FILTER (WHERE overdue) AS overdue,
           count(*) FILTER (WHERE overdue AND NOT done) AS overdue_open,
           count(*) FILTER (WHERE reopened) AS reopened,
           count(*) FILTER (WHERE done OR reopened) AS resolved_ever,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median_hours,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY hours) AS p90_hours
    FROM scoped
    GROUP BY GROUPING SETS ((gkey), ())
),
dims AS (
    SELECT code COLLATE "C" AS gkey FROM department WHERE :grp = 'department'
    UNION ALL
    SELECT code FROM area
    WHERE :grp = 'area'
      AND CASE WHEN :prefix IS NULL THEN level = 'district'
               ELSE parent_id = (SELECT id FROM area WHERE path = :prefix) END
),
grouped AS (
    SELECT coalesce(f.gkey, d.gkey) AS gkey, false AS is_total,
           coalesce(f.opened, 0) AS opened, coalesce(f.closed, 0) AS closed,
           coalesce(f.overdue, 0) AS overdue, coalesce(f.overdue_open, 0) AS overdue_open,
           coalesce(f.reopened, 0) AS reopened, coalesce(f.resolved_ever, 0) AS resolved_ever,
           f.median_hours, f.p90_hours
    FROM (SELECT * FROM figs WHERE NOT is_total) f
    FULL JOIN dims d ON d.gkey = f.gkey
    UNION ALL
    SELECT NULL, true, opened, closed, overdue, overdue_open, reopened, resolved_ever, median_hours, p90_hours
    FROM figs WHERE is_total
)
SELECT g.is_total,
       g.key,
       coalesce(dep.name, a.name) AS name,
       coalesce(dep.name_en, a.name_en, a.name) AS name_en,
       g.opened, g.closed, g.overdue, g.overdue_open, g.reopened, g.resolved_ever,
       round(g.median_hours::numeric, 2)::float8 AS median_hours,
       round(g.p90_hours::numeric, 2)::float8 AS p90_hours,
       round(g.reopened::numeric / nullif(g.resolved_ever, 0), 4)::float8 AS reopen_rate
FROM (SELECT *, CASE WHEN gkey = '' THEN split_part(:prefix, '.', :part - 1) ELSE gkey END AS key
      FROM grouped) g
LEFT JOIN department dep ON :grp = 'department' AND dep.code = g.key
LEFT JOIN area a ON :grp = 'area' AND a.code = g.key
ORDER BY g.is_total, g.gkey NULLS LAST;

-- name: dashboard_scope_area(path)^
SELECT code, name, coalesce(name_en, name) AS name_en FROM area WHERE path = :path;
