-- Revisions: every change of a job or worker row takes the next number of one counter, so
-- a client that merges fetched snapshots with live events keeps whichever copy is newer by
-- the coordinator's order, never by arrival order (like Kubernetes' resourceVersion).
-- `revision_counter.value` is the newest revision handed out; a list fetched in one read
-- transaction reports it as the snapshot's `revision`.
CREATE TABLE revision_counter (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision_counter (id, value) VALUES (1, 0);

ALTER TABLE jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

-- The inner UPDATEs change `revision`, so the WHEN clauses stop them from firing again.
CREATE TRIGGER jobs_revision_insert AFTER INSERT ON jobs
BEGIN
    UPDATE revision_counter SET value = value + 1 WHERE id = 1;
    UPDATE jobs SET revision = (SELECT value FROM revision_counter WHERE id = 1)
        WHERE id = NEW.id;
END;

CREATE TRIGGER jobs_revision_update AFTER UPDATE ON jobs
WHEN NEW.revision = OLD.revision
BEGIN
    UPDATE revision_counter SET value = value + 1 WHERE id = 1;
    UPDATE jobs SET revision = (SELECT value FROM revision_counter WHERE id = 1)
        WHERE id = NEW.id;
    -- A worker's `running` is read from the jobs table: when a job starts or stops running
    -- on a worker, that worker's row changes too.
    UPDATE workers SET revision = (SELECT value FROM revision_counter WHERE id = 1)
        WHERE (OLD.state IS NOT NEW.state OR OLD.worker_id IS NOT NEW.worker_id
               OR OLD.attempts IS NOT NEW.attempts)
          AND id IN (OLD.worker_id, NEW.worker_id);
END;

CREATE TRIGGER workers_revision_insert AFTER INSERT ON workers
BEGIN
    UPDATE revision_counter SET value = value + 1 WHERE id = 1;
    UPDATE workers SET revision = (SELECT value FROM revision_counter WHERE id = 1)
        WHERE id = NEW.id;
END;

CREATE TRIGGER workers_revision_update AFTER UPDATE ON workers
WHEN NEW.revision = OLD.revision
BEGIN
    UPDATE revision_counter SET value = value + 1 WHERE id = 1;
    UPDATE workers SET revision = (SELECT value FROM revision_counter WHERE id = 1)
        WHERE id = NEW.id;
END;
