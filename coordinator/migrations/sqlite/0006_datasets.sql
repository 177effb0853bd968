-- Datasets: content-addressed files under data_dir/datasets/<sha256 hex>, named by people.
-- A blob row exists only once its file is complete and its digest checked.
CREATE TABLE dataset_blobs (
    digest     TEXT    PRIMARY KEY,      -- SHA-256, 64 lowercase hex digits
    kind       TEXT    NOT NULL CHECK (kind IN ('idx', 'csv', 'text')),
    size       INTEGER NOT NULL,
    preview    TEXT    NOT NULL,         -- JSON, kiln_proto::dataset::DatasetPreview
    created_ms INTEGER NOT NULL
);

-- Every (re)naming is a version; `kiln:NAME` is the newest (highest id) version of NAME.
CREATE TABLE dataset_versions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    digest     TEXT    NOT NULL REFERENCES dataset_blobs (digest),
    created_ms INTEGER NOT NULL
);
CREATE INDEX dataset_versions_name ON dataset_versions (name, id);
CREATE INDEX dataset_versions_digest ON dataset_versions (digest);

-- The dataset a job trains on (pinned at submission), and the name it was submitted under.
ALTER TABLE jobs ADD COLUMN dataset_digest TEXT;
ALTER TABLE jobs ADD COLUMN dataset_name TEXT;
CREATE INDEX jobs_dataset ON jobs (dataset_digest);
