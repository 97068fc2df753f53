-- The citizen's ready answers move to a narrow table of their own, one row per (code, kind), kept
-- inline: a scan reads one index entry and one heap page, with no TOAST lookup and nothing to
-- decompress. Pages of up to about 8 KB stay whole in their row (toast_tuple_target); a larger
-- one is compressed in place first.
CREATE TABLE citizen_answer (
    code            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('json', 'zh', 'en')),
    shop_id         bigint NOT NULL REFERENCES shop (id),
    version         bigint NOT NULL,
    status          smallint NOT NULL DEFAULT 200,
    body            bytea NOT NULL,
    PRIMARY KEY (code, kind)
) WITH (toast_tuple_target = 8160);
ALTER TABLE citizen_answer ALTER COLUMN body SET STORAGE MAIN;

INSERT INTO citizen_answer (code, kind, shop_id, version, status, body)
SELECT p.code, k.kind, p.shop_id, p.version, p.citizen_status, k.body
FROM shop_profile p
CROSS JOIN LATERAL (VALUES ('json', p.citizen_json), ('zh', p.citizen_html_zh), ('en', p.citizen_html_en))
    AS k(kind, body)
WHERE k.body IS NOT NULL;

ALTER TABLE shop_profile
    DROP COLUMN citizen_json,
    DROP COLUMN citizen_html_zh,
    DROP COLUMN citizen_html_en,
    DROP COLUMN citizen_status;
