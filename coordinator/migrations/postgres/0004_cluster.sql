-- Several coordinators on one database (`kiln_coordinator::cluster`).
-- Which coordinator process holds a worker's socket (its node id; NULL while it is being
-- re-attached or once it disconnected). As the SQLite migration 0011.
ALTER TABLE workers ADD COLUMN node TEXT;

-- The coordinator processes: each writes its heartbeat every half heartbeat interval; one
-- whose heartbeat is older than the lost timeout is gone, and so are its workers' sockets.
CREATE TABLE coordinators (
    node         TEXT   PRIMARY KEY,
    addr         TEXT   NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- Messages between coordinators travel by NOTIFY, whose payload is limited to 8000 bytes: a
-- longer one is stored here and the notification carries its id. Swept after a minute.
CREATE TABLE bus_payloads (
    id         BIGSERIAL PRIMARY KEY,
    payload    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL
);
