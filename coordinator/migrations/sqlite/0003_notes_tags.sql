-- A run's notes and tags, set after submitting (`PATCH /api/jobs/{id}`). Tags are a JSON array
-- of strings (checked by `JobPatch::normalized` before they are stored); `?tag=` filters with
-- json_each.
ALTER TABLE jobs ADD COLUMN notes TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
