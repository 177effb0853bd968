-- Kiln coordinator schema, version 1. Times are milliseconds since the Unix epoch.

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL,
    spec_json        TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL,
    -- The spec's `device`, for the scheduler's matching without parsing spec_json.
    device           TEXT    NOT NULL,
    "group"          TEXT,
    created_ms       INTEGER NOT NULL,
    started_ms       INTEGER,
    finished_ms      INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    worker_id        TEXT,
    step             INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    -- Set by a cancel of a running job; the job turns `cancelled` when its attempt ends.
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queue ON jobs (state, priority DESC, id);
CREATE INDEX jobs_group ON jobs ("group");
CREATE INDEX jobs_name ON jobs (name);

CREATE TABLE attempts (
    job_id            INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt           INTEGER NOT NULL,
    worker_id         TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    started_ms        INTEGER NOT NULL,
    finished_ms       INTEGER,
    resumed_from_step INTEGER,
    resume_artifact   TEXT,
    error             TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE metrics (
    job_id          INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    step            INTEGER NOT NULL,
    split           TEXT    NOT NULL,
    -- NULL when the worker reported a non-finite loss (SQLite stores NaN as NULL).
    loss            REAL,
    accuracy        REAL,
    lr              REAL,
    samples_per_sec REAL,
    epoch           REAL    NOT NULL
);
CREATE INDEX metrics_job_step ON metrics (job_id, step);

CREATE TABLE logs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    ts_ms   INTEGER NOT NULL,
    text    TEXT    NOT NULL
);
CREATE INDEX logs_job_seq ON logs (job_id, seq);

CREATE TABLE artifacts (
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE workers (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    capabilities_json TEXT    NOT NULL,
    connected         INTEGER NOT NULL DEFAULT 0,
    draining          INTEGER NOT NULL DEFAULT 0,
    last_seen_ms      INTEGER NOT NULL
);

CREATE TABLE tokens (
    -- Hex SHA-256 of the bearer token; the token itself is never stored.
    hash       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('admin', 'worker')),
    name       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
);
