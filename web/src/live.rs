//! One rule for every view that merges fetched snapshots with live events: **the newer copy
//! of a row wins**, by the revision the coordinator gave it ([`Revision`]), never by the order
//! in which answers and events arrive. A fetch started before a job finished can land after
//! the job's `succeeded` event; it must not put `running` back.
//!
//! [`take_newer`] is the rule for one row (the job page); [`LiveList`] for a list (the jobs
//! and workers pages). Pure, so it is tested natively.

use std::collections::HashMap;
use std::hash::Hash;

use kiln_proto::protocol::{JobId, JobInfo, Revision, WorkerInfo};

/// A row the coordinator versions.
pub trait Versioned: Clone {
    type Key: Eq + Hash + Clone;
    fn key(&self) -> Self::Key;
    fn revision(&self) -> Revision;
}

impl Versioned for JobInfo {
    type Key = JobId;
    fn key(&self) -> JobId {
        self.id
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

impl Versioned for WorkerInfo {
    type Key = String;
    fn key(&self) -> String {
        self.id.clone()
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

/// Show `incoming` (a fetched row, an action's answer or an event) unless the row shown is
/// newer. Equal revisions are the same version, so taking it changes nothing. Returns
/// whether `incoming` was taken.
pub fn take_newer<T: Versioned>(shown: &mut Option<T>, incoming: T) -> bool {
    if shown
        .as_ref()
        .is_some_and(|s| s.revision() > incoming.revision())
    {
        return false;
    }
    *shown = Some(incoming);
    true
}

/// A list that fetched snapshots and live events both update. Besides the rows shown it
/// remembers the newest revision seen of every row, shown or not: a row that an event took
/// off the list (it no longer matches the filter) must not come back with an older snapshot.
#[derive(Debug, Clone)]
pub struct LiveList<T: Versioned> {
    rows: Vec<T>,
    seen: HashMap<T::Key, Revision>,
}

impl<T: Versioned> Default for LiveList<T> {
    fn default() -> Self {
        LiveList {
            rows: Vec::new(),
            seen: HashMap::new(),
        }
    }
}

impl<T: Versioned> LiveList<T> {
    /// The rows shown, in the list's order.
    pub fn rows(&self) -> &[T] {
        &self.rows
    }

    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.rows.iter().find(|r| r.key() == *key)
    }

    fn is_stale(&self, row: &T) -> bool {
        self.seen
            .get(&row.key())
            .is_some_and(|&newest| newest > row.revision())
    }

    /// A row's copy from a live event or an action's answer. `belongs`: whether this copy is
    /// on the list (its filter); `position`: where a row not shown yet goes. Returns whether
    /// the list changed.
    pub fn event(&mut self, row: T, belongs: bool, position: impl Fn(&[T], &T) -> usize) -> bool {
        if self.is_stale(&row) {
            return false;
        }
        let key = row.key();
        self.seen.insert(key.clone(), row.revision());
        match (self.rows.iter().position(|r| r.key() == key), belongs) {
            (Some(i), true) => self.rows[i] = row,
            (Some(i), false) => {
                self.rows.remove(i);
            }
            (None, true) => {
                let at = position(&self.rows, &row).min(self.rows.len());
                self.rows.insert(at, row);
            }
            (None, false) => return false,
        }
        true
    }

    /// A fetched snapshot, in the list's order, read when the coordinator's newest revision
    /// was `as_of`. Its rows replace the shown ones except where a newer copy came live
    /// meanwhile. A shown row missing from the snapshot stays only if it changed after the
    /// snapshot was read (`revision > as_of`: its event was newer than the fetch); `as_of =
    /// None` means rows never leave this list (workers are never deleted), so none is dropped.
    pub fn snapshot(
        &mut self,
        fetched: Vec<T>,
        as_of: Option<Revision>,
        position: impl Fn(&[T], &T) -> usize,
    ) {
        let index: HashMap<T::Key, usize> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key(), i))
            .collect();
        let mut old: Vec<Option<T>> = self.rows.drain(..).map(Some).collect();
        let mut rows = Vec::with_capacity(fetched.len());
        for f in fetched {
            let shown = index.get(&f.key()).and_then(|&i| old[i].take());
            if self.is_stale(&f) {
                // A newer copy came live: keep it if it is shown (if an event took it off the
                // list, it stays off).
                rows.extend(shown);
            } else {
                self.seen.insert(f.key(), f.revision());
                rows.push(f);
            }
        }
        // The shown rows the snapshot did not have, in their shown order.
        for r in old.into_iter().flatten() {
            if as_of.is_none_or(|as_of| r.revision() > as_of) {
                let at = position(&rows, &r).min(rows.len());
                rows.insert(at, r);
            }
        }
        self.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::JobSpec;
    use kiln_proto::protocol::JobState;

    use super::*;

    fn job(id: JobId, state: JobState, revision: Revision) -> JobInfo {
        JobInfo {
            id,
            name: format!("j{id}"),
            state,
            priority: 0,
            group: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            attempts: 1,
            max_attempts: 1,
            worker_id: None,
            step: 0,
            total_steps: 0,
            error: None,
            spec: JobSpec::from_json_str(
                r#"{"name":"s","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"}}"#,
            )
            .expect("spec"),
            notes: String::new(),
            tags: Vec::new(),
            revision,
            dataset_name: None,
            paused: false,
            lr_changes: Vec::new(),
            forked_from: None,
        }
    }

    /// The jobs page's order: newest job first.
    fn newest_first(rows: &[JobInfo], j: &JobInfo) -> usize {
        rows.partition_point(|r| r.id > j.id)
    }

    fn states(list: &LiveList<JobInfo>) -> Vec<(JobId, JobState)> {
        list.rows().iter().map(|j| (j.id, j.state)).collect()
    }

    #[test]
    fn a_snapshot_older_than_an_event_does_not_put_the_old_state_back() {
        use JobState::*;
        let mut list = LiveList::default();
        // The fetch reads job 8 running (revision 10, snapshot as of 11); before its answer
        // lands, the job's `succeeded` event (revision 12) arrives.
        assert!(list.event(job(8, Succeeded, 12), true, newest_first));
        list.snapshot(
            vec![job(8, Running, 10), job(7, Succeeded, 3)],
            Some(11),
            newest_first,
        );
        assert_eq!(states(&list), [(8, Succeeded), (7, Succeeded)]);
        // A late event with an older revision is ignored too; a newer one is taken.
        assert!(!list.event(job(8, Running, 11), true, newest_first));
        assert_eq!(list.get(&8).map(|j| j.state), Some(Succeeded));
        assert!(list.event(job(7, Failed, 13), true, newest_first));
        assert_eq!(states(&list), [(8, Succeeded), (7, Failed)]);
    }

    #[test]
    fn a_newer_snapshot_wins_over_older_events_and_equal_revisions_are_taken() {
        use JobState::*;
        let mut list = LiveList::default();
        list.event(job(3, Running, 5), true, newest_first);
        list.snapshot(vec![job(3, Succeeded, 9)], Some(9), newest_first);
        assert_eq!(states(&list), [(3, Succeeded)]);
        assert!(!list.event(job(3, Running, 6), true, newest_first));
        // Same revision, same version: harmless, and it keeps a pre-revision coordinator
        // (every revision 0) working by arrival order.
        assert!(list.event(job(3, Succeeded, 9), true, newest_first));
        let mut legacy = LiveList::default();
        legacy.snapshot(vec![job(1, Running, 0)], Some(0), newest_first);
        legacy.event(job(1, Succeeded, 0), true, newest_first);
        assert_eq!(states(&legacy), [(1, Succeeded)]);
    }

    #[test]
    fn a_row_an_event_took_off_the_list_stays_off_when_an_older_snapshot_lands() {
        use JobState::*;
        // Filter `state=running`: job 5 finishes (event, no longer matches) while a fetch
        // that read it running is in flight.
        let mut list = LiveList::default();
        list.snapshot(vec![job(5, Running, 4)], Some(4), newest_first);
        assert!(list.event(job(5, Succeeded, 7), false, newest_first));
        assert!(list.rows().is_empty());
        list.snapshot(vec![job(5, Running, 4)], Some(6), newest_first);
        assert!(list.rows().is_empty(), "{:?}", states(&list));
    }

    #[test]
    fn rows_missing_from_a_snapshot_stay_only_if_they_changed_after_it() {
        use JobState::*;
        let mut list = LiveList::default();
        list.snapshot(
            vec![job(4, Queued, 2), job(3, Queued, 1)],
            Some(2),
            newest_first,
        );
        // Job 6 is submitted after the next fetch read the list (revision 9 > as of 8); job 3
        // was read at revision 1 and is not in that fetch: it left the list (filtered out, or
        // past the page's limit).
        list.event(job(6, Queued, 9), true, newest_first);
        list.snapshot(
            vec![job(5, Queued, 8), job(4, Running, 7)],
            Some(8),
            newest_first,
        );
        assert_eq!(states(&list), [(6, Queued), (5, Queued), (4, Running)]);
    }

    #[test]
    fn without_as_of_nothing_leaves_the_list() {
        let w = |id: &str, connected, revision| WorkerInfo {
            id: id.into(),
            name: id.into(),
            capabilities: kiln_proto::protocol::Capabilities {
                devices: vec![],
                device_names: vec![],
                memory_mb: 0,
                cores: 1,
                kiln_version: "t".into(),
                peer_addr: None,
                browser: false,
                control: false,
            },
            connected,
            draining: false,
            last_seen_ms: 0,
            running: None,
            revision,
        };
        let append = |rows: &[WorkerInfo], _: &WorkerInfo| rows.len();
        let mut list = LiveList::default();
        list.event(w("b", true, 5), true, append);
        list.event(w("a", false, 6), true, append);
        list.snapshot(vec![w("a", true, 4)], None, append);
        let shown: Vec<(&str, bool)> = list
            .rows()
            .iter()
            .map(|w| (w.id.as_str(), w.connected))
            .collect();
        assert_eq!(shown, [("a", false), ("b", true)]);
    }

    #[test]
    fn one_row_takes_the_newer_copy() {
        use JobState::*;
        let mut shown = None;
        assert!(take_newer(&mut shown, job(1, Running, 3)));
        assert!(take_newer(&mut shown, job(1, Cancelled, 5)));
        // The cancel request's answer (revision 4) lands after the `cancelled` event.
        assert!(!take_newer(&mut shown, job(1, Running, 4)));
        assert_eq!(shown.map(|j| j.state), Some(Cancelled));
    }
}
