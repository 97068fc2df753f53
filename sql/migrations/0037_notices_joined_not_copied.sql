-- A trade- or area-wide notice is no longer copied into every profile it reaches (issue 19).
--
-- A catering push to 290,000 shops inserted 290,000 inbox deliveries, and each marked its shop's
-- profile for a whole rebuild (all its documents and three rendered answers): minutes of both
-- cores at a city's scale, while scans waited. Now the citizen's views join the notices when
-- they are made, from the small list of policies sent to a whole trade and area (each worker
-- keeps it in memory, notices.py); a merchant's or an inspector's view reads the shop's own inbox
-- when it is opened. A delivery, or its reading, changes no profile.

DROP TRIGGER delivery_dirty_ins ON delivery;
DROP TRIGGER delivery_dirty_upd ON delivery;
DROP TRIGGER delivery_dirty_del ON delivery;
DROP FUNCTION profile_dirty_by_inbox_delivery();

-- Who a stored answer's notices are for: "<trade> <area id>" of the shop when it was rendered;
-- NULL for a closed shop (no notice reaches one) and for answers rendered before this migration,
-- which keep the notices they were rendered with until their rebuild below.
ALTER TABLE citizen_answer ADD COLUMN audience text;

-- every profile once more, in the background (the drain), to drop the copied notices
INSERT INTO profile_dirty (shop_id) SELECT id FROM shop;
