-- Tokens with scopes (read ⊂ submit ⊂ admin; worker apart), an id to list and revoke them by,
-- an optional expiry and, for a worker token, the one worker id it may act as. SQLite cannot
-- change a CHECK constraint in place: the table is rebuilt, its tokens kept.
CREATE TABLE tokens_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Hex SHA-256 of the bearer token; the token itself is never stored.
    hash       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL CHECK (kind IN ('read', 'submit', 'admin', 'worker')),
    name       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    worker_id  TEXT
);
INSERT INTO tokens_new (hash, kind, name, created_ms)
    SELECT hash, kind, name, created_ms FROM tokens ORDER BY created_ms;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;

-- The token a worker last connected with: a worker token acts only for the attempts of the
-- workers that connected with it.
ALTER TABLE workers ADD COLUMN token_id INTEGER;

-- What was done with admin, submit and read tokens that changed something (every request but
-- GET and the workers' own), for `GET /api/audit`.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms      INTEGER NOT NULL,
    token_id   INTEGER,
    token_name TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    peer       TEXT
);
