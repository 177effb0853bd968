//! Connected workers, in memory: the socket to each, when it was last heard from, and whether
//! it is draining. The database keeps the durable part (see `store::workers`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use kiln_proto::protocol::{AttemptRef, Capabilities, CloseReason, CoordinatorMessage};

/// What the coordinator wants a worker's socket task to do.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once into a connection's channel; boxing would add an allocation per message"
)]
pub enum Outbound {
    Message(CoordinatorMessage),
    /// Send Goodbye with this reason, then close.
    Close(CloseReason),
}

#[derive(Debug)]
struct Entry {
    conn_id: u64,
    /// `None` once disconnected (the entry stays to remember when it was last seen).
    tx: Option<mpsc::UnboundedSender<Outbound>>,
    capabilities: Capabilities,
    draining: bool,
    /// Set once the worker's hello is reconciled with the database; until then it is no
    /// scheduling candidate.
    ready: bool,
    /// What the worker last said it runs (hello, heartbeats), less attempts it finished since.
    /// A worker still running something is no candidate even where the database says it is
    /// free: an attempt declared lost while the worker was cut off runs until its cancel lands.
    running: Vec<AttemptRef>,
    last_seen: Instant,
    /// The socket task is handling a frame of this worker (store writes, fan-out). That time
    /// is the coordinator's, not the worker's silence: a slow disk must not make a worker
    /// "lost" (see `drop_silent`).
    handling: bool,
    connected_at: Instant,
}

/// A worker that can take a job now.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub capabilities: Capabilities,
}

#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    next_conn: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a connection; returns its id and the sender of the connection it replaces.
    pub fn connect(
        &self,
        id: &str,
        capabilities: Capabilities,
        draining: bool,
        running: Vec<AttemptRef>,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> (u64, Option<mpsc::UnboundedSender<Outbound>>) {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let old = self.lock().insert(
            id.to_string(),
            Entry {
                conn_id,
                tx: Some(tx),
                capabilities,
                draining,
                ready: false,
                running,
                last_seen: now,
                handling: false,
                connected_at: now,
            },
        );
        (conn_id, old.and_then(|e| e.tx))
    }

    /// Forget a connection's sender. `true` if it was the worker's current connection.
    pub fn disconnect(&self, id: &str, conn_id: u64) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(id) {
            Some(e) if e.conn_id == conn_id && e.tx.is_some() => {
                e.tx = None;
                e.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    pub fn touch(&self, id: &str, conn_id: u64) {
        if let Some(e) = self.lock().get_mut(id)
            && e.conn_id == conn_id
        {
            e.last_seen = Instant::now();
        }
    }

    /// The socket task starts (`true`) or ends (`false`) handling a frame of this worker.
    /// Silence is counted from the end of the handling, so only time spent waiting on the
    /// worker's socket counts toward its lost timeout.
    pub fn set_handling(&self, id: &str, conn_id: u64, handling: bool) {
        if let Some(e) = self.lock().get_mut(id)
            && e.conn_id == conn_id
        {
            e.handling = handling;
            e.last_seen = Instant::now();
        }
    }

    /// Queue a message for a connected worker; `false` if it is not connected.
    pub fn send(&self, id: &str, msg: Outbound) -> bool {
        self.lock()
            .get(id)
            .and_then(|e| e.tx.as_ref())
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Make a connection a scheduling candidate (see `Entry::ready`).
    pub fn set_ready(&self, id: &str, conn_id: u64) {
        if let Some(e) = self.lock().get_mut(id)
            && e.conn_id == conn_id
        {
            e.ready = true;
        }
    }

    /// The attempts a worker says it runs (a heartbeat). `true` if that freed it.
    pub fn set_running(&self, id: &str, conn_id: u64, running: Vec<AttemptRef>) -> bool {
        match self.lock().get_mut(id) {
            Some(e) if e.conn_id == conn_id => {
                let freed = !e.running.is_empty() && running.is_empty();
                e.running = running;
                freed
            }
            _ => false,
        }
    }

    /// `attempt` was assigned to the worker: it runs it until it says otherwise (so it is no
    /// candidate even where the attempt ends in the database before its next heartbeat).
    pub fn assigned(&self, id: &str, attempt: AttemptRef) {
        if let Some(e) = self.lock().get_mut(id)
            && !e.running.contains(&attempt)
        {
            e.running.push(attempt);
        }
    }

    /// A worker finished `attempt`: it no longer runs it.
    pub fn finished(&self, id: &str, conn_id: u64, attempt: AttemptRef) {
        if let Some(e) = self.lock().get_mut(id)
            && e.conn_id == conn_id
        {
            e.running.retain(|a| *a != attempt);
        }
    }

    pub fn set_draining(&self, id: &str) {
        if let Some(e) = self.lock().get_mut(id) {
            e.draining = true;
        }
    }

    /// Connected workers that are ready, not draining and run nothing; oldest connection first.
    pub fn candidates(&self) -> Vec<Candidate> {
        let entries = self.lock();
        let mut list: Vec<(&String, &Entry)> = entries
            .iter()
            .filter(|(_, e)| e.tx.is_some() && e.ready && !e.draining && e.running.is_empty())
            .collect();
        list.sort_by_key(|(id, e)| (e.connected_at, (*id).clone()));
        list.into_iter()
            .map(|(id, e)| Candidate {
                id: id.clone(),
                capabilities: e.capabilities.clone(),
            })
            .collect()
    }

    /// A connected worker's capabilities (`None` when it is not connected here).
    pub fn capabilities(&self, id: &str) -> Option<Capabilities> {
        self.lock()
            .get(id)
            .filter(|e| e.tx.is_some())
            .map(|e| e.capabilities.clone())
    }

    /// `Some((connected, last_seen))` for a worker seen since this coordinator started.
    pub fn seen(&self, id: &str) -> Option<(bool, Instant)> {
        self.lock().get(id).map(|e| (e.tx.is_some(), e.last_seen))
    }

    /// Connected workers not heard from for longer than `timeout`: disconnected here (their
    /// socket tasks see the channel close and end). Returns their ids. A worker whose frame
    /// is being handled is not silent, however long the handling takes.
    pub fn drop_silent(&self, timeout: Duration) -> Vec<String> {
        let mut dropped = Vec::new();
        for (id, e) in self.lock().iter_mut() {
            if e.tx.is_some() && !e.handling && e.last_seen.elapsed() > timeout {
                e.tx = None;
                dropped.push(id.clone());
            }
        }
        dropped
    }

    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|e| e.tx.is_some()).count()
    }

    /// Tell every connected worker to close.
    pub fn close_all(&self, reason: &CloseReason) {
        for e in self.lock().values() {
            if let Some(tx) = &e.tx {
                let _ = tx.send(Outbound::Close(reason.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            devices: Vec::new(),
            device_names: Vec::new(),
            memory_mb: 0,
            cores: 1,
            kiln_version: "test".into(),
            peer_addr: None,
            browser: false,
            control: false,
        }
    }

    fn registry_with(id: &str) -> (Registry, u64, mpsc::UnboundedReceiver<Outbound>) {
        let registry = Registry::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (conn, _) = registry.connect(id, caps(), false, Vec::new(), tx);
        (registry, conn, rx)
    }

    #[test]
    fn a_worker_whose_frame_is_being_handled_is_not_silent() {
        let (registry, conn, _rx) = registry_with("w");
        let timeout = Duration::from_millis(30);
        registry.set_handling("w", conn, true);
        std::thread::sleep(timeout * 2);
        assert!(registry.drop_silent(timeout).is_empty());
        // Silence counts from the end of the handling.
        registry.set_handling("w", conn, false);
        assert!(registry.drop_silent(timeout).is_empty());
        std::thread::sleep(timeout * 2);
        assert_eq!(registry.drop_silent(timeout), vec!["w".to_string()]);
        assert_eq!(
            registry.seen("w").map(|(connected, _)| connected),
            Some(false)
        );
    }

    #[test]
    fn handling_marks_of_a_replaced_connection_are_ignored() {
        let (registry, old, _rx) = registry_with("w");
        let (tx, _rx2) = mpsc::unbounded_channel();
        let (_new, replaced) = registry.connect("w", caps(), false, Vec::new(), tx);
        assert!(replaced.is_some());
        registry.set_handling("w", old, true);
        let timeout = Duration::from_millis(30);
        std::thread::sleep(timeout * 2);
        assert_eq!(registry.drop_silent(timeout), vec!["w".to_string()]);
    }
}
