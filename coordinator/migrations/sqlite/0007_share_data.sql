-- A share link opens the run's stored dataset (`GET /api/share/{token}/dataset`, so a
-- recipient can re-run it in a browser) only when it was created with `with_data`; links made
-- before this migration do not.
ALTER TABLE shares ADD COLUMN with_data INTEGER NOT NULL DEFAULT 0;
