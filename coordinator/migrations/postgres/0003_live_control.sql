-- As the SQLite migration 0010: live control and forks.
ALTER TABLE jobs ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lr_changes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN forked_from_job BIGINT;
ALTER TABLE jobs ADD COLUMN forked_from_step BIGINT;
