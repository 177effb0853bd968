-- Which coordinator process holds a worker's socket (its node id; NULL while it is being
-- re-attached or once it disconnected). One process on SQLite; on PostgreSQL several may share
-- the database (PostgreSQL migration 0004).
ALTER TABLE workers ADD COLUMN node TEXT;
