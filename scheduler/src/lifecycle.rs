//! Jobs and tasks through their lifecycle: submission, planning, admission, attempts ending,
//! retries, failure, cancellation and timeouts, and the fencing of workers' reports.

use crate::api::{
    AttemptRef, JobPhase, JobSpec, Outcome, PolicySpec, Progress, Quotas, ResolvedRoute,
};
use crate::dag::Dag;
use crate::engine::{
    JobRt, Scheduler, TaskPayload, TaskRt, TaskState, TenantRt, Timer, derive_trace_id, traceparent,
};
use crate::event::{CancelReason, Effect, Ignored};
use crate::intern::BitSet;
use crate::place::Shape;
use crate::policy::{self, Usage};
use crate::queue::Queued;
use crate::score::Strategy;
use crate::settings::QueueOrder;
use crate::time::Timestamp;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::sync::Arc;

impl Scheduler {
    // ----- jobs -----

    pub(crate) fn tenant_id(&mut self, name: &str) -> u32 {
        let id = self.tenant_ids.intern(name);
        if id as usize == self.tenants.len() {
            self.tenants.push(TenantRt {
                name: name.into(),
                ..TenantRt::default()
            });
            self.refresh_tenant(id);
        }
        id
    }

    /// The policy that governs a tenant's quotas and placement: its own, else the `*` policy.
    pub(crate) fn tenant_policy(&self, tenant: &str) -> Option<(&String, &PolicySpec)> {
        crate::admission::tenant_policy(&self.policies, tenant)
    }

    pub(crate) fn refresh_tenant(&mut self, id: u32) {
        let name = self.tenants[id as usize].name.clone();
        let (quotas, zones) = match self.tenant_policy(&name) {
            Some((_, p)) => (
                p.quotas,
                (!p.allowed_localities.is_empty()).then(|| p.allowed_localities.clone()),
            ),
            None => (Quotas::default(), None),
        };
        let zones = zones.map(|z| {
            BitSet::from_ids(
                z.iter()
                    .map(|z| self.fleet.zones.intern(z))
                    .collect::<Vec<_>>(),
            )
        });
        let t = &mut self.tenants[id as usize];
        t.quotas = quotas;
        t.zones = zones;
    }

    pub(crate) fn refresh_tenants(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        for id in 0..self.tenants.len() as u32 {
            self.refresh_tenant(id);
            self.admit_waiting(id, now, out);
        }
        // Quotas and allowed localities may have changed: every parked bucket looks again.
        self.fleet.epoch += 1;
        self.dirty = true;
    }

    pub(crate) fn submit(
        &mut self,
        key: &str,
        mut spec: JobSpec,
        trace_id: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        if self.job_ids.contains_key(key) {
            out.push(Effect::Ignored(Ignored::DuplicateJob {
                job: key.to_owned(),
            }));
            return;
        }
        let key: Arc<str> = key.into();
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        let tenant = self.tenant_id(&spec.tenant);
        let trace_id: Arc<str> = match trace_id {
            Some(t) => t.into(),
            None => derive_trace_id(&key, now).into(),
        };
        let mut job = JobRt {
            key: key.clone(),
            seq,
            tenant,
            priority: spec.priority,
            phase: JobPhase::Queued,
            reason: None,
            message: None,
            submitted: now,
            started: None,
            finished: None,
            timeout_ms: spec.timeout_seconds.map(|s| s.saturating_mul(1000)),
            dag: Dag::default(),
            tasks: Vec::new(),
            task_ids: FxHashMap::default(),
            progress: Progress::default(),
            critical_ms: 0,
            trace_id,
            spec: Box::default(),
        };
        let j = self.job_slot();
        match crate::admission::admit(
            &mut spec,
            &self.policies,
            &self.routes,
            &self.settings.limits,
        ) {
            Ok(crate::admission::Admitted {
                dag,
                planned,
                routes,
            }) => {
                if planned {
                    out.push(Effect::JobPlanned {
                        job: key.clone(),
                        tasks: spec.tasks.clone(),
                        dependencies: spec.dependencies.clone(),
                    });
                }
                job.dag = dag;
                self.build_tasks(&mut job, &mut spec, Some(routes));
                let canceled = spec.cancel;
                job.spec = Box::new(spec);
                self.put_job(j, job);
                self.job_ids.insert(key, j);
                if canceled {
                    self.terminate(
                        j,
                        JobPhase::Canceled,
                        "Canceled",
                        "the job was submitted canceled".into(),
                        now,
                        out,
                    );
                } else {
                    self.enqueue_admission(j);
                    self.admit_waiting(tenant, now, out);
                }
            }
            Err(crate::admission::Rejection { reason, message }) => {
                job.spec = Box::new(spec);
                job.phase = JobPhase::Failed;
                job.reason = Some(reason);
                job.message = Some(message.clone());
                job.finished = Some(now);
                self.put_job(j, job);
                self.job_ids.insert(key.clone(), j);
                out.push(Effect::JobPhaseChanged {
                    job: key,
                    from: JobPhase::Queued,
                    to: JobPhase::Failed,
                    reason,
                    message: Some(message),
                });
            }
        }
    }

    /// Plans, validates and checks a spec against policy, and routes its inference tasks.
    /// Builds the job's runtime tasks, moving each task's spec out of `spec.tasks` into them.
    pub(crate) fn build_tasks(
        &mut self,
        job: &mut JobRt,
        spec: &mut JobSpec,
        routes: Option<Vec<Option<ResolvedRoute>>>,
    ) {
        let mut routes = routes.map(Vec::into_iter);
        let specs = std::mem::take(&mut spec.tasks);
        job.tasks.reserve_exact(specs.len());
        let indexed = specs.len() > JobRt::SCAN_UP_TO;
        for (i, t) in specs.into_iter().enumerate() {
            let f = &mut self.fleet;
            let shape = Shape {
                cpu: t.resources.cpu_millis,
                mem: t.resources.memory_mib,
                gpus: t.resources.gpus,
                model: t.model.as_deref().map(|m| f.models.intern(m)),
                tools: BitSet::from_ids(
                    t.tools
                        .iter()
                        .map(|x| f.tools.intern(x))
                        .collect::<Vec<_>>(),
                ),
                locality: t.locality.as_deref().map(|z| f.zones.intern(z)),
                classification: t
                    .classification
                    .as_deref()
                    .map(|c| f.classifications.intern(c)),
            };
            let model = shape.model;
            let size = model.is_none().then_some((shape.cpu, shape.gpus));
            let shape = self.shapes.intern(shape);
            let bucket = self
                .queue
                .bucket_of(job.priority, job.tenant, shape, model, size);
            let route = routes
                .as_mut()
                .and_then(Iterator::next)
                .flatten()
                .map(Box::new);
            let id: Arc<str> = t.id.as_str().into();
            if indexed {
                job.task_ids.insert(id.clone(), i as u32);
            }
            let payload = TaskPayload {
                tools: t.tools,
                locality: t.locality,
                classification: t.classification,
                command: t.command,
                input: t.input,
            };
            job.tasks.push(TaskRt {
                id,
                state: TaskState::Waiting,
                attempt: 0,
                unmet: job.dag.parents(i as u32).len() as u32,
                bucket,
                cpu: t.resources.cpu_millis,
                mem: t.resources.memory_mib,
                gpus: t.resources.gpus,
                model,
                hint_ms: t
                    .expected_duration_ms
                    .unwrap_or(self.settings.default_duration_ms),
                hinted: t.expected_duration_ms.is_some(),
                kind: t.kind,
                interaction: t.interaction_class,
                reasoning: t.reasoning_required,
                timeout_s: t.timeout_seconds,
                retry: t.retry,
                error: None,
                route,
                warm_wait_since: None,
                ready_at: Timestamp::ZERO,
                slack_ms: 0,
                payload: (payload != TaskPayload::default()).then(|| Box::new(payload)),
            });
        }
        // Upward rank: the longest path from each task to the end of the job, by hints.
        let mut rank = vec![0u64; job.tasks.len()];
        for &t in job.dag.topological_order().iter().rev() {
            let after = job
                .dag
                .children(t)
                .iter()
                .map(|&c| rank[c as usize])
                .max()
                .unwrap_or(0);
            rank[t as usize] = job.tasks[t as usize].hint_ms.saturating_add(after);
        }
        let critical = rank.iter().copied().max().unwrap_or(0);
        job.critical_ms = critical;
        for (task, r) in job.tasks.iter_mut().zip(rank) {
            task.slack_ms = critical - r;
        }
        job.progress = Progress {
            total: job.tasks.len() as u32,
            waiting: job.tasks.len() as u32,
            ..Progress::default()
        };
    }

    pub(crate) fn enqueue_admission(&mut self, j: u32) {
        let job = self.job(j);
        let entry = (Reverse(job.priority), job.submitted, job.seq, j);
        let tenant = job.tenant;
        self.tenants[tenant as usize].admission.insert(entry);
    }

    /// Admits the tenant's queued jobs while its running-jobs quota allows.
    pub(crate) fn admit_waiting(&mut self, tenant: u32, now: Timestamp, out: &mut Vec<Effect>) {
        if self.strategy == Strategy::Kueue {
            return self.admit_waiting_kueue(tenant, now, out);
        }
        loop {
            let t = &self.tenants[tenant as usize];
            let Some(&first) = t.admission.first() else {
                return;
            };
            if let Err(block) = policy::job_fits(&t.quotas, &t.usage) {
                let waiting: Vec<u32> = t.admission.iter().map(|e| e.3).collect();
                for (pos, j) in waiting.into_iter().enumerate() {
                    let msg = format!("{block}; position {} in the tenant's queue", pos + 1);
                    let job = self.job_mut(j);
                    if job.message.as_deref() != Some(msg.as_str()) {
                        job.reason = Some("QuotaExceeded");
                        job.message = Some(msg);
                    }
                }
                return;
            }
            self.tenants[tenant as usize].admission.remove(&first);
            self.admit(first.3, now, out);
        }
    }

    /// What Kueue reserves for a job: the sum of its tasks' requests, each task one pod.
    fn kueue_request(&self, j: u32) -> Usage {
        let mut need = Usage::default();
        for t in &self.job(j).tasks {
            need.take(t.cpu, t.mem, t.gpus);
        }
        need
    }

    /// The `kueue` policy's admission: the tenant's waiting jobs in BestEffortFIFO order, each
    /// admitted when its whole request fits next to what admitted jobs hold (see
    /// `crate::peers::kueue`); one that does not fit lets the next try.
    fn admit_waiting_kueue(&mut self, tenant: u32, now: Timestamp, out: &mut Vec<Effect>) {
        let waiting: Vec<_> = self.tenants[tenant as usize]
            .admission
            .iter()
            .copied()
            .collect();
        for entry in waiting {
            let j = entry.3;
            let t = &self.tenants[tenant as usize];
            let verdict = policy::job_fits(&t.quotas, &t.usage)
                .map_err(|b| ("QuotaExceeded", b.to_string()))
                .and_then(|()| {
                    let need = self.kueue_request(j);
                    crate::peers::kueue::admits(&t.quotas, &t.reserved, &need)
                        .map(|()| need)
                        .map_err(|why| ("Inadmissible", why.to_string()))
                });
            match verdict {
                Ok(need) => {
                    let r = &mut self.tenants[tenant as usize].reserved;
                    r.running_tasks += need.running_tasks;
                    r.cpu_millis += need.cpu_millis;
                    r.memory_mib += need.memory_mib;
                    r.gpus += need.gpus;
                    self.tenants[tenant as usize].admission.remove(&entry);
                    self.admit(j, now, out);
                }
                Err((reason, msg)) => {
                    let job = self.job_mut(j);
                    if job.message.as_deref() != Some(msg.as_str()) {
                        job.reason = Some(reason);
                        job.message = Some(msg);
                    }
                }
            }
        }
    }

    pub(crate) fn admit(&mut self, j: u32, now: Timestamp, out: &mut Vec<Effect>) {
        let tenant = self.job(j).tenant;
        self.tenants[tenant as usize].usage.running_jobs += 1;
        self.set_phase(j, JobPhase::Planning, "Admitted", None, out);
        self.set_phase(j, JobPhase::Scheduled, "Planned", None, out);
        let job = self.job_mut(j);
        job.started = Some(now);
        if let Some(ms) = job.timeout_ms {
            self.arm(now.plus_ms(ms), Timer::JobTimeout { job: j });
        }
        let roots: Vec<u32> = (0..self.job(j).tasks.len() as u32)
            .filter(|&t| self.job(j).tasks[t as usize].unmet == 0)
            .collect();
        for t in roots {
            self.make_ready(j, t);
        }
    }

    pub(crate) fn set_phase(
        &mut self,
        j: u32,
        to: JobPhase,
        reason: &'static str,
        message: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let job = self.job_mut(j);
        let from = job.phase;
        if from == to {
            return;
        }
        job.phase = to;
        job.reason = Some(reason);
        job.message = message.clone();
        out.push(Effect::JobPhaseChanged {
            job: job.key.clone(),
            from,
            to,
            reason,
            message,
        });
    }

    pub(crate) fn mark_running(&mut self, j: u32, _now: Timestamp, out: &mut Vec<Effect>) {
        if self.job(j).phase == JobPhase::Scheduled {
            self.set_phase(j, JobPhase::Running, "TaskStarted", None, out);
        }
    }

    pub(crate) fn set_state(&mut self, j: u32, t: u32, state: TaskState) {
        let job = self.job_mut(j);
        let task = &mut job.tasks[t as usize];
        let (old, new) = (task.state.phase(), state.phase());
        task.state = state;
        if old != new {
            *job.progress.slot(old) -= 1;
            *job.progress.slot(new) += 1;
        }
    }

    pub(crate) fn queued(&self, j: u32, t: u32) -> (u32, Queued) {
        let job = self.job(j);
        let task = &job.tasks[t as usize];
        // The splai policy runs first the jobs that would finish first if run alone (their
        // submission plus critical path), and inside a job the tasks with the least slack; the
        // baselines take jobs in arrival order.
        let (due, slack) = match (self.strategy, self.settings.queue_order) {
            (Strategy::Splai, QueueOrder::CriticalPath) => {
                (job.submitted.plus_ms(job.critical_ms), task.slack_ms)
            }
            (s, _) if s.is_peer() => crate::peers::queue_position(
                s,
                &crate::peers::JobFacts {
                    submitted: job.submitted,
                    critical_ms: job.critical_ms,
                    deadline_ms: job.spec.deadline_seconds.map(|s| s.saturating_mul(1000)),
                },
                task.ready_at,
                job.critical_ms - task.slack_ms,
                task.hint_ms,
            ),
            _ => (job.submitted, 0),
        };
        (
            task.bucket,
            Queued {
                due,
                slack,
                job_seq: job.seq,
                job: j,
                task: t,
            },
        )
    }

    pub(crate) fn make_ready(&mut self, j: u32, t: u32) {
        self.set_state(j, t, TaskState::Ready);
        let now = self.now;
        let task = &mut self.job_mut(j).tasks[t as usize];
        task.warm_wait_since = None;
        task.ready_at = now;
        let (bucket, q) = self.queued(j, t);
        self.queue.push(bucket, q);
        self.dirty = true;
    }

    /// Ends the attempt in flight, records it, and moves the task on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_attempt(
        &mut self,
        j: u32,
        t: u32,
        now: Timestamp,
        outcome: Outcome,
        error: Option<String>,
        artifact: Option<String>,
        retryable: bool,
        out: &mut Vec<Effect>,
    ) {
        let job = self.job(j);
        let task = &job.tasks[t as usize];
        let Some((w, at, started, cold)) = task.state.active() else {
            return;
        };
        let (cpu, mem, gpus, attempt, hint, model) = (
            task.cpu,
            task.mem,
            task.gpus,
            task.attempt,
            task.hint_ms,
            task.model,
        );
        let traceparent = traceparent(&job.trace_id, &job.key, &task.id, attempt);
        let record = crate::api::ExecutionRecord {
            job: job.key.to_string(),
            task: task.id.to_string(),
            attempt,
            worker: self.fleet.workers[w as usize].name.to_string(),
            assigned_at: at,
            started_at: started,
            finished_at: now,
            outcome,
            error: error.clone(),
            artifact_uri: artifact.clone(),
            traceparent,
        };
        let tenant = job.tenant as usize;
        self.fleet.release(w, (j, t), cpu, mem, gpus);
        if let Some(m) = model {
            self.queue.count_running(m, false);
        }
        self.tenants[tenant].usage.give_back(cpu, mem, gpus);
        out.push(Effect::AttemptEnded(Box::new(record)));
        self.dirty = true;
        match outcome {
            Outcome::Succeeded => {
                if let (Some(s), false) = (started, cold) {
                    let ran = now.since(s).max(1);
                    let smoothing = self.settings.speed_smoothing;
                    self.fleet
                        .observe_speed(w, hint as f64 / ran as f64, smoothing);
                }
                self.set_state(
                    j,
                    t,
                    TaskState::Succeeded {
                        at: now,
                        artifact: artifact.map(Into::into),
                    },
                );
                let children: Vec<u32> = self.job(j).dag.children(t).to_vec();
                for c in children {
                    let child = &mut self.job_mut(j).tasks[c as usize];
                    child.unmet -= 1;
                    if child.unmet == 0
                        && child.state == TaskState::Waiting
                        && !self.job(j).phase.is_terminal()
                    {
                        self.make_ready(j, c);
                    }
                }
                self.maybe_finish(j, now, out);
            }
            Outcome::Canceled => self.set_state(j, t, TaskState::Canceled { at: now }),
            Outcome::Failed | Outcome::TimedOut | Outcome::WorkerLost => {
                let error = error.unwrap_or_else(|| "attempt failed".into());
                self.job_mut(j).tasks[t as usize].error = Some(error.as_str().into());
                let task = &self.job(j).tasks[t as usize];
                if retryable && attempt <= task.retry.limit && !self.job(j).phase.is_terminal() {
                    let not_before = now.plus_ms(task.retry.backoff_before(attempt + 1));
                    let (jk, tk) = (self.job(j).key.clone(), task.id.clone());
                    self.set_state(j, t, TaskState::Retrying { not_before });
                    self.arm(
                        not_before,
                        Timer::Backoff {
                            job: j,
                            task: t,
                            attempt,
                        },
                    );
                    self.stats.retries += 1;
                    out.push(Effect::Requeue {
                        job: jk,
                        task: tk,
                        failed_attempt: attempt,
                        not_before,
                        error,
                    });
                } else {
                    let end = if outcome == Outcome::TimedOut {
                        TaskState::TimedOut { at: now }
                    } else {
                        TaskState::Failed { at: now }
                    };
                    self.set_state(j, t, end);
                    self.skip_descendants(j, t, now);
                    self.maybe_finish(j, now, out);
                }
            }
        }
    }

    pub(crate) fn skip_descendants(&mut self, j: u32, t: u32, now: Timestamp) {
        let mut stack: Vec<u32> = self.job(j).dag.children(t).to_vec();
        while let Some(c) = stack.pop() {
            if self.job(j).tasks[c as usize].state == TaskState::Waiting {
                self.set_state(j, c, TaskState::Skipped { at: now });
                stack.extend_from_slice(self.job(j).dag.children(c));
            }
        }
    }

    /// Ends the job once every task has ended.
    pub(crate) fn maybe_finish(&mut self, j: u32, now: Timestamp, out: &mut Vec<Effect>) {
        let job = self.job(j);
        if job.phase.is_terminal() || job.progress.finished() < job.progress.total {
            return;
        }
        let p = job.progress;
        let (phase, reason, message) = if p.failed + p.timed_out + p.skipped > 0 {
            let first = job.tasks.iter().find(|t| {
                matches!(
                    t.state,
                    TaskState::Failed { .. } | TaskState::TimedOut { .. }
                )
            });
            let msg = first.map(|t| {
                format!(
                    "task `{}` {} after {} attempt(s): {}; {} downstream task(s) skipped",
                    t.id,
                    if matches!(t.state, TaskState::TimedOut { .. }) {
                        "timed out"
                    } else {
                        "failed"
                    },
                    t.attempt,
                    t.error.as_deref().unwrap_or("no error message"),
                    p.skipped
                )
            });
            (JobPhase::Failed, "TaskFailed", msg)
        } else if p.canceled > 0 {
            (JobPhase::Canceled, "Canceled", None)
        } else {
            (JobPhase::Completed, "Completed", None)
        };
        self.close_job(j, phase, reason, message, now, out);
    }

    pub(crate) fn close_job(
        &mut self,
        j: u32,
        phase: JobPhase,
        reason: &'static str,
        message: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let was_admitted = self.job(j).started.is_some();
        self.set_phase(j, phase, reason, message, out);
        let job = self.job_mut(j);
        job.finished = Some(now);
        let tenant = job.tenant;
        if was_admitted {
            if self.strategy == Strategy::Kueue {
                let need = self.kueue_request(j);
                let r = &mut self.tenants[tenant as usize].reserved;
                r.running_tasks -= need.running_tasks;
                r.cpu_millis -= need.cpu_millis;
                r.memory_mib -= need.memory_mib;
                r.gpus -= need.gpus;
            }
            self.tenants[tenant as usize].usage.running_jobs -= 1;
            self.admit_waiting(tenant, now, out);
        }
    }

    /// Cancels every unfinished task and ends the job in `phase`.
    pub(crate) fn terminate(
        &mut self,
        j: u32,
        phase: JobPhase,
        reason: &'static str,
        message: String,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        if self.job(j).phase.is_terminal() {
            return;
        }
        let (tenant, entry) = {
            let job = self.job(j);
            (
                job.tenant,
                (Reverse(job.priority), job.submitted, job.seq, j),
            )
        };
        self.tenants[tenant as usize].admission.remove(&entry);
        let cancel_reason = if phase == JobPhase::Canceled {
            CancelReason::JobCanceled
        } else {
            CancelReason::JobTimedOut
        };
        for t in 0..self.job(j).tasks.len() as u32 {
            let task = &self.job(j).tasks[t as usize];
            match task.state {
                TaskState::Assigned { worker, .. } | TaskState::Running { worker, .. } => {
                    out.push(Effect::Cancel {
                        job: self.job(j).key.clone(),
                        task: task.id.clone(),
                        attempt: task.attempt,
                        worker: self.fleet.workers[worker as usize].name.clone(),
                        reason: cancel_reason,
                    });
                    let msg = Some(message.clone());
                    self.finish_attempt(j, t, now, Outcome::Canceled, msg, None, false, out);
                }
                TaskState::Ready => {
                    let (bucket, q) = self.queued(j, t);
                    self.queue.remove(bucket, &q);
                    self.set_state(j, t, TaskState::Canceled { at: now });
                }
                TaskState::Waiting | TaskState::Retrying { .. } => {
                    self.set_state(j, t, TaskState::Canceled { at: now })
                }
                _ => {}
            }
        }
        self.close_job(j, phase, reason, Some(message), now, out);
    }

    pub(crate) fn forget(&mut self, key: &str, out: &mut Vec<Effect>) {
        match self.job_ids.get(key).copied() {
            Some(j) if self.job(j).phase.is_terminal() => {
                self.job_ids.remove(key);
                self.drop_job(j);
            }
            Some(_) => {} // a live job is never dropped; cancel it first
            None => out.push(Effect::Ignored(Ignored::UnknownJob {
                job: key.to_owned(),
            })),
        }
    }

    // ----- reports from workers -----

    /// Finds the task of a report and checks that the report is for its current attempt, on the
    /// worker it was given to, while that attempt is in flight.
    pub(crate) fn fence(
        &mut self,
        a: &AttemptRef,
        worker: &str,
        out: &mut Vec<Effect>,
    ) -> Option<(u32, u32)> {
        let Some(&j) = self.job_ids.get(a.job.as_str()) else {
            out.push(Effect::Ignored(Ignored::UnknownJob { job: a.job.clone() }));
            self.stats.ignored_reports += 1;
            return None;
        };
        let Some(t) = self.job(j).task_index(&a.task) else {
            out.push(Effect::Ignored(Ignored::UnknownTask {
                job: a.job.clone(),
                task: a.task.clone(),
            }));
            self.stats.ignored_reports += 1;
            return None;
        };
        let task = &self.job(j).tasks[t as usize];
        let current = task
            .state
            .active()
            .is_some_and(|(w, ..)| *self.fleet.workers[w as usize].name == *worker);
        if current && task.attempt == a.attempt {
            return Some((j, t));
        }
        out.push(Effect::Ignored(Ignored::StaleReport {
            attempt: a.clone(),
            worker: worker.to_owned(),
            current_attempt: task.attempt,
        }));
        self.stats.ignored_reports += 1;
        None
    }

    pub(crate) fn started(
        &mut self,
        a: AttemptRef,
        worker: &str,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let Some((j, t)) = self.fence(&a, worker, out) else {
            return;
        };
        if let TaskState::Assigned { worker, at, cold } = self.job(j).tasks[t as usize].state {
            self.set_state(
                j,
                t,
                TaskState::Running {
                    worker,
                    at,
                    started: now,
                    cold,
                },
            );
        }
        self.mark_running(j, now, out);
    }
}
