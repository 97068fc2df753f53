-- The citizen's answers, ready to send: rendered once when the profile is rebuilt (off every
-- request), so a scan of any of a million shops is one indexed read of bytes, whether or not the
-- worker that takes it has the shop in its cache. `citizen_status` is 200, or 410 for a revoked
-- sticker (whose page says so).
ALTER TABLE shop_profile
    ADD COLUMN citizen_json bytea,
    ADD COLUMN citizen_html_zh bytea,
    ADD COLUMN citizen_html_en bytea,
    ADD COLUMN citizen_status smallint NOT NULL DEFAULT 200;

-- profiles built before this migration get their answers rendered by the next drain
INSERT INTO profile_dirty (shop_id) SELECT shop_id FROM shop_profile ON CONFLICT DO NOTHING;
