//! Worker writes: which `SPLAIWorker`s to create, and when a worker's status is worth writing.
//!
//! Heartbeats change only the core's memory. A worker's status is written when something a
//! person or a restart needs changed (health, running tasks, queue depth, warm models), and
//! otherwise at most every `worker_refresh_ms`: a thousand workers beating every second cause
//! a handful of writes per second, not a thousand.

use std::collections::BTreeMap;

use splai_scheduler::api::{Capabilities, WorkerStatus};
use splai_scheduler::{Scheduler, Timestamp};

use super::Note;
use crate::resources::{SPLAIWorker, SPLAIWorkerStatus};

#[derive(Clone, Debug)]
pub struct WorkerWrite {
    pub name: String,
    pub namespace: String,
    /// Create the object first, with these capabilities.
    pub create: Option<Capabilities>,
    pub status: Option<SPLAIWorkerStatus>,
    pub notes: Vec<Note>,
}

#[derive(Debug, Default)]
struct WorkerEntry {
    /// The `SPLAIWorker` object exists (or its creation is under way).
    exists: bool,
    create: Option<Capabilities>,
    written: Option<WorkerStatus>,
    written_at: u64,
    touched: bool,
    notes: Vec<Note>,
}

/// The workers this driver writes, by name.
#[derive(Debug)]
pub(super) struct Workers {
    entries: BTreeMap<String, WorkerEntry>,
    /// Where agents' `SPLAIWorker`s live.
    namespace: String,
    refresh_ms: u64,
}

impl Workers {
    pub fn new(namespace: String, refresh_ms: u64) -> Self {
        Workers {
            entries: BTreeMap::new(),
            namespace,
            refresh_ms,
        }
    }

    /// A worker listed at a restart, whose status counts as written as `written`.
    pub fn restored(&mut self, name: String, written: WorkerStatus, now: Timestamp) {
        let entry = WorkerEntry {
            exists: true,
            written: Some(written),
            written_at: now.millis(),
            ..WorkerEntry::default()
        };
        self.entries.insert(name, entry);
    }

    fn ours<'a>(&self, w: &'a SPLAIWorker) -> Option<&'a String> {
        w.metadata
            .name
            .as_ref()
            .filter(|_| w.metadata.namespace.as_deref() == Some(&self.namespace))
    }

    /// A watch event shows the object.
    pub fn applied(&mut self, w: &SPLAIWorker) {
        if let Some(name) = self.ours(w) {
            self.entries.entry(name.clone()).or_default().exists = true;
        }
    }

    /// A watch event shows the object gone; gives its name if it was one of ours.
    pub fn deleted(&mut self, w: &SPLAIWorker) -> Option<String> {
        let name = self.ours(w)?.clone();
        self.entries.remove(&name);
        Some(name)
    }

    /// An agent registered: its object is created if there is none.
    pub fn registered(&mut self, name: &str, capabilities: &Capabilities) {
        let entry = self.entries.entry(name.to_owned()).or_default();
        if !entry.exists {
            entry.exists = true;
            entry.create = Some(capabilities.clone());
        }
    }

    /// Something about the worker may have changed: its status is looked at in the next flush.
    pub fn touch(&mut self, name: &str) {
        if let Some(w) = self.entries.get_mut(name) {
            w.touched = true;
        }
    }

    /// An Event to record on the worker.
    pub fn note(&mut self, name: &str, note: Note) {
        if let Some(w) = self.entries.get_mut(name) {
            w.touched = true;
            w.notes.push(note);
        }
    }

    /// The writes due: creations, Events, and statuses that changed materially or are due for
    /// a refresh.
    pub fn take_writes(&mut self, core: &Scheduler, now: Timestamp) -> Vec<WorkerWrite> {
        let mut writes = Vec::new();
        for (name, w) in &mut self.entries {
            if !w.touched && w.create.is_none() && w.notes.is_empty() {
                continue;
            }
            w.touched = false;
            let Some(status) = core.worker_status(name) else {
                continue;
            };
            let material = w.written.as_ref().is_none_or(|old| {
                old.health != status.health
                    || old.running_tasks != status.running_tasks
                    || old.queue_depth != status.queue_depth
                    || old.warm_models != status.warm_models
                    || old.incarnation != status.incarnation
            });
            let due = now.millis().saturating_sub(w.written_at) >= self.refresh_ms;
            let write_status = material || due || w.create.is_some();
            if !write_status && w.notes.is_empty() {
                continue;
            }
            if write_status {
                w.written = Some(status.clone());
                w.written_at = now.millis();
            }
            writes.push(WorkerWrite {
                name: name.clone(),
                namespace: self.namespace.clone(),
                create: w.create.take(),
                status: write_status.then(|| SPLAIWorkerStatus::new(status, None)),
                notes: std::mem::take(&mut w.notes),
            });
        }
        writes
    }

    /// A write that failed: the worker's status is written again at the next flush.
    pub fn failed(&mut self, w: WorkerWrite) {
        if let Some(e) = self.entries.get_mut(&w.name) {
            e.touched = true;
            e.written = None;
            if w.create.is_some() {
                e.create = w.create;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use splai_scheduler::api::Capabilities;
    use splai_scheduler::{Event, Heartbeat, Settings, Timestamp};

    use crate::driver::test_support::from_agent;
    use crate::driver::{Driver, DriverConfig, Flushed, Listed};
    use crate::metrics::Metrics;

    /// `w1`'s first registration.
    fn registered() -> Event {
        Event::WorkerRegistered {
            name: "w1".into(),
            capabilities: Capabilities {
                cpu_millis: 1000,
                memory_mib: 1024,
                ..Capabilities::default()
            },
            incarnation: 1,
        }
    }

    #[test]
    fn a_heartbeat_that_changes_nothing_material_is_written_only_once_the_refresh_is_due() {
        let cfg = DriverConfig {
            worker_namespace: "sys".into(),
            worker_refresh_ms: 5_000,
        };
        let metrics = Arc::new(Metrics::default());
        let mut d = Driver::rebuild(
            cfg,
            Settings::default(),
            metrics,
            Listed::default(),
            Timestamp(1_000),
        );
        from_agent(&mut d, registered(), 2_000);
        let first = d.take_flush(Timestamp(2_000)).expect("the new worker");
        assert!(first.workers[0].create.is_some());
        assert!(first.workers[0].status.is_some());
        d.flushed(Flushed::default(), Timestamp(2_000));
        let beat = || {
            Event::Heartbeat(Heartbeat {
                worker: "w1".into(),
                incarnation: 1,
                ..Heartbeat::default()
            })
        };
        from_agent(&mut d, beat(), 3_000);
        assert!(
            d.take_flush(Timestamp(3_000)).is_none(),
            "nothing to write yet"
        );
        from_agent(&mut d, beat(), 7_000);
        let due = d.take_flush(Timestamp(7_000)).expect("the refresh");
        let status = due.workers[0].status.as_ref().expect("a status write");
        assert_eq!(status.worker.last_heartbeat, Some(Timestamp(7_000)));
    }

    #[test]
    fn a_failed_worker_write_is_retried_but_holds_back_no_answer() {
        let mut d = crate::driver::test_support::driver();
        from_agent(&mut d, registered(), 2_000);
        crate::driver::test_support::heartbeat(&mut d, 4);
        let flush = d.take_flush(Timestamp(2_000)).expect("the new worker");
        let done = Flushed {
            failed_workers: flush.workers.clone(),
            acks: flush.acks.clone(),
            ..Flushed::default()
        };
        assert_eq!(d.flushed(done, Timestamp(2_000)), [("w1".to_owned(), 4)]);
        let again = d.take_flush(Timestamp(2_100)).expect("the worker again");
        assert!(again.workers[0].create.is_some());
        assert!(again.workers[0].status.is_some());
    }
}
