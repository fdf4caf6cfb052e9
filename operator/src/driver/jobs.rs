//! Job writes: what the driver still has to write for each job it tracks (status, planned spec,
//! finalizer, attempt records, Events), how far each job's writes have come
//! ([`Stage`]), and when an ended job leaves memory.

use std::collections::{BTreeMap, HashMap};

use splai_scheduler::api::{Dependency, JobPhase, JobStatus, TaskSpec};
use splai_scheduler::{Scheduler, Timestamp};

use super::Note;
use crate::artifacts::{AttemptRecord, Decision, JobDir};
use crate::condition::{ConditionStatus, set_condition};
use crate::resources::SPLAIJobStatus;
use crate::view;

/// Jobs written per flush at most; the rest wait for the next flush.
pub const MAX_JOBS_PER_FLUSH: usize = 256;

/// The finalizer to add to a job, with the object's finalizers and `resourceVersion` as its
/// watch event showed them: the patch is sent on that version without reading the object first.
/// If the object changed since, the API server answers 409 and the flusher reads it then.
#[derive(Clone, Debug, PartialEq)]
pub struct AddFinalizer {
    pub seen: Option<SeenMeta>,
}

/// An object's finalizers at a `resourceVersion`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenMeta {
    pub resource_version: String,
    pub finalizers: Vec<String>,
}

/// Everything to write for one job, in the order the flusher writes it.
#[derive(Clone, Debug)]
pub struct JobWrite {
    pub key: String,
    pub dir: JobDir,
    pub finalizer: Option<AddFinalizer>,
    pub planned: Option<(Vec<TaskSpec>, Vec<Dependency>)>,
    pub chunk: Option<(u64, Vec<AttemptRecord>)>,
    pub status: Option<SPLAIJobStatus>,
    /// The job ended: gather its records into one artifact (and its results, if many) first.
    pub finish: bool,
    pub remove_finalizer: bool,
    pub notes: Vec<Note>,
}

impl JobWrite {
    /// Only the removal of the finalizer, for a deleted job that ended before.
    pub(super) fn release(key: String, dir: JobDir) -> Self {
        JobWrite {
            key,
            dir,
            finalizer: None,
            planned: None,
            chunk: None,
            status: None,
            finish: false,
            remove_finalizer: true,
            notes: Vec::new(),
        }
    }
}

/// How far a job's status writes have come. A job moves down this list, and back up only when
/// a write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// It runs (or waits) in the core, and its stored status is up to date.
    Current,
    /// It runs in the core, and its status changed since it was last written.
    Changed,
    /// The core ended it; its final status (with the records' URI) is yet to be written.
    Ended,
    /// Its final status is written or being written. Nothing about the job changes after
    /// that, so nothing more is written for it but its finalizer's removal.
    Final,
}

impl Stage {
    /// Something its status shows changed; after the end, nothing does.
    fn changed(self) -> Self {
        match self {
            Stage::Current => Stage::Changed,
            other => other,
        }
    }

    fn ended(self) -> Self {
        match self {
            Stage::Current | Stage::Changed => Stage::Ended,
            other => other,
        }
    }

    fn is_ended(self) -> bool {
        matches!(self, Stage::Ended | Stage::Final)
    }

    fn status_due(self) -> bool {
        matches!(self, Stage::Changed | Stage::Ended)
    }

    /// The status is taken for writing.
    fn written(self) -> Self {
        match self {
            Stage::Changed => Stage::Current,
            Stage::Ended => Stage::Final,
            other => other,
        }
    }
}

/// The decision behind one attempt in flight.
#[derive(Debug)]
pub(super) struct Placed {
    pub attempt: u32,
    pub decision: Decision,
}

/// One job this driver tracks.
#[derive(Debug)]
pub(super) struct JobEntry {
    pub dir: JobDir,
    pub generation: Option<i64>,
    pub finalizer: Option<AddFinalizer>,
    pub planned: Option<(Vec<TaskSpec>, Vec<Dependency>)>,
    pub records: Vec<AttemptRecord>,
    pub next_chunk: u64,
    pub notes: Vec<Note>,
    /// The decision behind each task's attempt in flight, by task id: shown in the status while
    /// it runs, then kept in its record.
    pub placed: HashMap<String, Placed>,
    /// The last reason the core gave for a task's wait, by task id, until it is placed.
    pub waited: HashMap<String, String>,
    pub conditions: Vec<crate::Condition>,
    pub stage: Stage,
    /// The object is being deleted. This and `has_finalizer` mirror the object, as its watch
    /// events show it, so they are fields beside the stage rather than part of it: a job can be
    /// deleted at any stage, and its finalizer is removed only once it ended.
    pub deleting: bool,
    /// The object holds the finalizer, as far as this driver knows (counting a removal in
    /// flight as done, until it fails).
    pub has_finalizer: bool,
}

impl JobEntry {
    /// A job this driver starts to track: its status is written at the next flush. Its attempt
    /// records are numbered from `next_chunk` on.
    pub fn new(dir: JobDir, generation: Option<i64>, next_chunk: u64) -> Self {
        JobEntry {
            dir,
            generation,
            finalizer: None,
            planned: None,
            records: Vec::new(),
            next_chunk,
            notes: Vec::new(),
            placed: HashMap::new(),
            waited: HashMap::new(),
            conditions: Vec::new(),
            stage: Stage::Changed,
            deleting: false,
            has_finalizer: true,
        }
    }

    /// Its status changed.
    pub fn changed(&mut self) {
        self.stage = self.stage.changed();
    }

    /// The core ended it.
    pub fn ended(&mut self) {
        self.stage = self.stage.ended();
    }

    /// Its object is being deleted, it ended, and the finalizer is still on.
    fn releases(&self) -> bool {
        self.stage.is_ended() && self.deleting && self.has_finalizer
    }

    fn has_writes(&self) -> bool {
        self.stage.status_due()
            || self.releases()
            || self.finalizer.is_some()
            || self.planned.is_some()
            || !self.records.is_empty()
            || !self.notes.is_empty()
    }

    /// Everything pending for this job, taken for writing.
    fn take_write(&mut self, key: &str, core: &Scheduler, now: Timestamp) -> JobWrite {
        let release = self.releases();
        let status = if self.stage.status_due() {
            core.job_status(key).map(|full| {
                let phase = full.phase;
                set_job_conditions(&mut self.conditions, &full, self.generation, now);
                let placed = &self.placed;
                let score = |task: &str| Some(placed.get(task)?.decision.score.clone());
                let mut s = view::compact(full, score, self.generation);
                s.conditions = self.conditions.clone();
                debug_assert_eq!(s.job.phase, phase);
                s
            })
        } else {
            None
        };
        let chunk = (!self.records.is_empty()).then(|| {
            self.next_chunk += 1;
            (self.next_chunk, std::mem::take(&mut self.records))
        });
        let finish = self.stage == Stage::Ended;
        self.stage = self.stage.written();
        self.has_finalizer &= !release;
        JobWrite {
            key: key.to_owned(),
            dir: self.dir.clone(),
            finalizer: self.finalizer.take(),
            planned: self.planned.take(),
            chunk,
            status,
            finish,
            remove_finalizer: release,
            notes: std::mem::take(&mut self.notes),
        }
    }

    /// Its final status is stored and nothing else is pending: it may leave memory, unless its
    /// object is being deleted (it stays until the object is gone).
    fn is_done(&self) -> bool {
        self.stage == Stage::Final
            && self.records.is_empty()
            && self.finalizer.is_none()
            && self.planned.is_none()
            && !self.deleting
    }
}

/// The jobs this driver tracks, by key, and the writes of jobs it no longer tracks.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    entries: BTreeMap<String, JobEntry>,
    /// Deleted jobs that ended before, whose finalizer still has to go.
    release: Vec<JobWrite>,
    /// Ended jobs dropped from memory, by key, with their uid: a late watch event that shows an
    /// older status of one must not start it again.
    forgotten: HashMap<String, String>,
    /// The last job of a flush that could not take every job with writes; the next starts
    /// after it.
    cursor: Option<String>,
}

impl Jobs {
    pub fn get_mut(&mut self, key: &str) -> Option<&mut JobEntry> {
        self.entries.get_mut(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn insert(&mut self, key: String, entry: JobEntry) {
        self.entries.insert(key, entry);
    }

    /// The job's status changed, if it is tracked.
    pub fn changed(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.changed();
        }
    }

    /// Its object is gone: nothing more to write for it.
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Its object was deleted: a new object of the same name is a new job.
    pub fn deleted(&mut self, key: &str) {
        self.entries.remove(key);
        self.forgotten.remove(key);
    }

    /// Whether this very object (by uid) ended and was dropped from memory.
    pub fn was_forgotten(&self, key: &str, uid: &str) -> bool {
        self.forgotten.get(key).is_some_and(|u| u == uid)
    }

    /// The finalizer of a job not tracked (it ended before) is to be removed.
    pub fn release(&mut self, key: String, dir: JobDir) {
        self.release.push(JobWrite::release(key, dir));
    }

    /// Takes the pending writes of at most [`MAX_JOBS_PER_FLUSH`] jobs, and says whether that
    /// was every job with writes.
    pub fn take_writes(&mut self, core: &Scheduler, now: Timestamp) -> (Vec<JobWrite>, bool) {
        let mut writes = std::mem::take(&mut self.release);
        let mut due: Vec<String> = Vec::new();
        for (key, e) in &mut self.entries {
            if e.stage == Stage::Final {
                // Late reports for an ended job change nothing worth writing.
                e.records.clear();
                e.notes.clear();
            }
            if e.has_writes() {
                due.push(key.clone());
            }
        }
        // At most MAX_JOBS_PER_FLUSH jobs per flush, taking turns from where the last one
        // stopped: a burst of submissions then costs bounded memory and no job waits forever.
        if let Some(cursor) = self.cursor.take() {
            let start = due.partition_point(|k| *k <= cursor);
            due.rotate_left(start);
        }
        let capped = due.len() > MAX_JOBS_PER_FLUSH;
        due.truncate(MAX_JOBS_PER_FLUSH);
        if capped {
            self.cursor = due.last().cloned();
        }
        for key in due {
            if let Some(e) = self.entries.get_mut(&key) {
                writes.push(e.take_write(&key, core, now));
            }
        }
        (writes, !capped)
    }

    /// A write that failed: what it carried is pending again.
    pub fn failed(&mut self, w: JobWrite) {
        let Some(e) = self.entries.get_mut(&w.key) else {
            if w.remove_finalizer {
                self.release.push(w);
            }
            return;
        };
        if w.finish {
            e.stage = Stage::Ended;
        } else if w.status.is_some() || w.remove_finalizer {
            e.changed();
        }
        e.has_finalizer |= w.remove_finalizer;
        if e.finalizer.is_none() {
            // What was seen may be out of date now: the next try reads the object first.
            e.finalizer = w.finalizer.map(|_| AddFinalizer { seen: None });
        }
        if e.planned.is_none() {
            e.planned = w.planned;
        }
        if let Some((_, mut records)) = w.chunk {
            records.append(&mut e.records);
            e.records = records;
        }
    }

    /// Ended jobs whose final status is stored and that have nothing else to write.
    pub fn done(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.is_done())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops an ended job from memory, remembering its uid.
    pub fn forget(&mut self, key: String) {
        if let Some(e) = self.entries.remove(&key) {
            self.forgotten.insert(key, e.dir.uid);
        }
    }
}

fn set_job_conditions(
    conditions: &mut Vec<crate::Condition>,
    status: &JobStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let reason = status.reason.clone().unwrap_or_else(|| "Submitted".into());
    let message = status.message.clone().unwrap_or_default();
    let admitted = status.started_at.is_some();
    let refused = !admitted && status.phase.is_terminal();
    let (a_status, a_reason) = match (admitted, refused) {
        (true, _) => (ConditionStatus::True, "Admitted".to_owned()),
        (false, true) => (ConditionStatus::False, reason.clone()),
        (false, false) => (ConditionStatus::False, "Queued".to_owned()),
    };
    set_condition(
        conditions, "Admitted", a_status, &a_reason, &message, generation, now,
    );
    let running = matches!(status.phase, JobPhase::Scheduled | JobPhase::Running);
    set_condition(
        conditions,
        "Running",
        if running {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if running {
            "TasksRunning"
        } else {
            "NotRunning"
        },
        "",
        generation,
        now,
    );
    let done = status.phase.is_terminal();
    set_condition(
        conditions,
        "Finished",
        if done {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if done { &reason } else { "InProgress" },
        if done { &message } else { "" },
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::test_support::{driver, heartbeat, job};
    use crate::driver::{Flushed, Input};

    #[test]
    fn a_burst_is_written_in_bounded_flushes_and_answers_wait_for_the_last_of_them() {
        let mut d = driver();
        let n = MAX_JOBS_PER_FLUSH * 2 + 10;
        for i in 0..n {
            d.input(Input::JobApplied(Box::new(job(i))), Timestamp(2_000));
        }
        heartbeat(&mut d, 7);
        let mut written = std::collections::BTreeSet::new();
        let mut answered = Vec::new();
        for round in 0..3 {
            let flush = d.take_flush(Timestamp(3_000)).expect("work to flush");
            assert!(flush.jobs.len() <= MAX_JOBS_PER_FLUSH);
            assert_eq!(flush.acks.is_empty(), round < 2, "round {round}");
            for w in &flush.jobs {
                assert!(written.insert(w.key.clone()), "{} written twice", w.key);
                // Every new job gets its finalizer with its first status.
                assert!(w.finalizer.is_some());
                assert!(w.status.is_some());
            }
            let acks = flush.acks.clone();
            answered.extend(d.flushed(
                Flushed {
                    acks,
                    ..Flushed::default()
                },
                Timestamp(3_000),
            ));
        }
        assert_eq!(written.len(), n);
        assert_eq!(answered, [("w1".to_owned(), 7)]);
    }

    #[test]
    fn a_failed_write_is_queued_again_and_holds_the_answers_back() {
        let mut d = driver();
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(2_000));
        heartbeat(&mut d, 3);
        let flush = d.take_flush(Timestamp(3_000)).unwrap();
        let done = Flushed {
            failed_jobs: flush.jobs.clone(),
            acks: flush.acks.clone(),
            ..Flushed::default()
        };
        assert!(d.flushed(done, Timestamp(3_000)).is_empty());
        let again = d.take_flush(Timestamp(3_100)).unwrap();
        assert_eq!(again.jobs.len(), 1);
        assert!(again.jobs[0].status.is_some());
        assert!(again.jobs[0].finalizer.is_some());
        assert_eq!(again.acks, [("w1".to_owned(), 3)]);
    }

    #[test]
    fn a_job_is_written_until_its_final_status_is_stored_and_then_only_its_finalizer_goes() {
        let dir = JobDir {
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u".into(),
        };
        let mut e = JobEntry::new(dir, None, 0);
        assert!(e.stage.status_due(), "a new job's status is written");
        e.stage = e.stage.written();
        assert_eq!(e.stage, Stage::Current);
        e.changed();
        e.ended();
        assert_eq!(e.stage, Stage::Ended);
        e.stage = e.stage.written();
        assert_eq!(e.stage, Stage::Final);
        e.changed();
        assert_eq!(
            e.stage,
            Stage::Final,
            "nothing changes after the final status"
        );
        assert!(!e.has_writes());
        e.deleting = true;
        assert!(e.releases() && e.has_writes(), "the finalizer is removed");
    }
}
