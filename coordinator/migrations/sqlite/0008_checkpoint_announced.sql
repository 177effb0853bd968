-- A checkpoint is resumed from only once its worker announced it over the WebSocket
-- (`WorkerMessage::Checkpoint`), which the worker sends after the metrics up to its step, on
-- the same ordered stream: so an attempt that resumes from it leaves no hole in the curve.
-- A checkpoint uploaded over HTTP starts unannounced; other artifacts, imported ones and
-- those stored before this migration count as announced.
ALTER TABLE artifacts ADD COLUMN announced INTEGER NOT NULL DEFAULT 1;
