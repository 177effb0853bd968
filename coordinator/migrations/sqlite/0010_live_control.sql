-- Live control (`POST /api/jobs/{id}/control`, `/fork`): whether the job is paused (what was
-- asked: an attempt assigned later starts paused), the learning rates its workers set live
-- (JSON `[{"step":…,"lr":…}]`, replayed by a resumed attempt), and the job and checkpoint
-- step a fork started from.
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lr_changes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN forked_from_job INTEGER;
ALTER TABLE jobs ADD COLUMN forked_from_step INTEGER;
