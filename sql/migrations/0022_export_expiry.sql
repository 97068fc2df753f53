-- Exports do not pile up in DATA_DIR: once a newer export of the same area and format has been
-- ready for a week (so links handed out keep working that long), the older one's file is deleted
-- and its row says 'expired' (merchant_code/exports.py: expire).
ALTER TABLE export_file DROP CONSTRAINT export_file_status_check;
ALTER TABLE export_file ADD CONSTRAINT export_file_status_check
    CHECK (status IN ('pending', 'running', 'ready', 'failed', 'expired'));
