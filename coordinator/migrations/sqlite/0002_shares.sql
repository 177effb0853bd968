-- Read-only share links of one job each. Only the SHA-256 of the token is stored (like
-- `tokens.hash`); `hint` is the token's last 6 characters so the owner can tell links apart.
CREATE TABLE shares (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    token_hash TEXT    NOT NULL UNIQUE,
    hint       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    -- Set once when the link is revoked; a revoked link resolves to nothing.
    revoked_ms INTEGER
);
CREATE INDEX shares_job ON shares (job_id);
