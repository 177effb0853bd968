-- The workers of an attempt, one per rank (data-parallel training runs an attempt on several
-- workers). `attempts.worker_id` stays rank 0's, so everything that reads one worker per
-- attempt keeps working; `Store::assign` writes rank 0 here as well.
CREATE TABLE attempt_ranks (
    job_id    INTEGER NOT NULL,
    attempt   INTEGER NOT NULL,
    rank      INTEGER NOT NULL CHECK (rank >= 0),
    worker_id TEXT    NOT NULL,
    PRIMARY KEY (job_id, attempt, rank),
    FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, attempt) ON DELETE CASCADE
);
CREATE INDEX attempt_ranks_worker ON attempt_ranks (worker_id);

-- Every attempt so far ran on one worker: its rank 0.
INSERT INTO attempt_ranks (job_id, attempt, rank, worker_id)
    SELECT job_id, attempt, 0, worker_id FROM attempts;
