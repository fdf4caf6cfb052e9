//! Read-only views of the core's state: statuses for the API, and invariant checks for tests
//! and simulator sweeps.

use crate::api::{AttemptRef, JobStatus, TaskArtifact, TaskStatus, WorkerStatus};
use crate::engine::{JobRt, Scheduler, TaskPayload, TaskRt, TaskState};

impl Scheduler {
    /// The status to write to a `SPLAIJob`, or `None` for an unknown job.
    pub fn job_status(&self, key: &str) -> Option<JobStatus> {
        let &j = self.job_ids.get(key)?;
        let job = self.job(j);
        let tasks: Vec<TaskStatus> = (0..job.tasks.len() as u32)
            .map(|t| self.task_status(j, t))
            .collect();
        let (mut result_artifact_uri, mut result_artifacts) = (None, Vec::new());
        if job.phase == crate::api::JobPhase::Completed {
            let sinks: Vec<TaskArtifact> = job
                .dag
                .sinks()
                .filter_map(|t| {
                    let task = &job.tasks[t as usize];
                    match &task.state {
                        TaskState::Succeeded {
                            artifact: Some(uri),
                            ..
                        } => Some(TaskArtifact {
                            task: task.id.to_string(),
                            uri: uri.to_string(),
                        }),
                        _ => None,
                    }
                })
                .collect();
            if let [only] = sinks.as_slice() {
                result_artifact_uri = Some(only.uri.clone());
            } else {
                result_artifacts = sinks;
            }
        }
        Some(JobStatus {
            phase: job.phase,
            progress: job.progress,
            reason: job.reason.map(str::to_owned),
            message: job.message.clone(),
            submitted_at: Some(job.submitted),
            started_at: job.started,
            finished_at: job.finished,
            trace_id: Some(job.trace_id.to_string()),
            result_artifact_uri,
            result_artifacts,
            tasks,
        })
    }

    fn task_status(&self, j: u32, t: u32) -> TaskStatus {
        let job = self.job(j);
        let task = &job.tasks[t as usize];
        let mut s = TaskStatus {
            id: task.id.to_string(),
            phase: task.state.phase(),
            attempt: task.attempt,
            error: task.error.as_deref().map(str::to_owned),
            route: task.route.as_deref().cloned(),
            ..TaskStatus::default()
        };
        if task.attempt > 0 {
            s.traceparent = Some(crate::engine::traceparent(
                &job.trace_id,
                &job.key,
                &task.id,
                task.attempt,
            ));
        }
        match &task.state {
            TaskState::Waiting => {
                let waiting: Vec<&str> = job
                    .dag
                    .parents(t)
                    .iter()
                    .map(|&p| &job.tasks[p as usize])
                    .filter(|p| !matches!(p.state, TaskState::Succeeded { .. }))
                    .map(|p| &*p.id)
                    .collect();
                if !waiting.is_empty() {
                    let more = if waiting.len() > 3 {
                        format!(" and {} more", waiting.len() - 3)
                    } else {
                        String::new()
                    };
                    s.pending_reason = Some(format!(
                        "waiting for {}{more}",
                        waiting[..waiting.len().min(3)].join(", ")
                    ));
                }
            }
            TaskState::Ready => {
                s.pending_reason = self.queue.buckets[task.bucket as usize]
                    .reason
                    .as_ref()
                    .map(ToString::to_string);
            }
            TaskState::Retrying { not_before } => {
                s.not_before = Some(*not_before);
                s.pending_reason = Some(format!("retrying after {not_before}"));
            }
            TaskState::Assigned { worker, at, .. } => {
                s.worker = Some(self.fleet.workers[*worker as usize].name.to_string());
                s.assigned_at = Some(*at);
            }
            TaskState::Running {
                worker,
                at,
                started,
                ..
            } => {
                s.worker = Some(self.fleet.workers[*worker as usize].name.to_string());
                s.assigned_at = Some(*at);
                s.started_at = Some(*started);
            }
            TaskState::Succeeded { at, artifact } => {
                s.finished_at = Some(*at);
                s.artifact_uri = artifact.as_deref().map(str::to_owned);
            }
            TaskState::Failed { at }
            | TaskState::TimedOut { at }
            | TaskState::Canceled { at }
            | TaskState::Skipped { at } => {
                s.finished_at = Some(*at);
            }
        }
        s
    }

    /// The status to write to a `SPLAIWorker`, or `None` for an unknown worker.
    pub fn worker_status(&self, name: &str) -> Option<WorkerStatus> {
        let w = &self.fleet.workers[self.fleet.id(name)? as usize];
        let mut running: Vec<AttemptRef> = w
            .active
            .iter()
            .map(|&(j, t)| {
                let job = self.job(j);
                let task = &job.tasks[t as usize];
                AttemptRef {
                    job: job.key.to_string(),
                    task: task.id.to_string(),
                    attempt: task.attempt,
                }
            })
            .collect();
        running.sort();
        Some(WorkerStatus {
            health: w.health,
            last_heartbeat: Some(w.last_heartbeat),
            incarnation: w.incarnation,
            utilization: w.utilization,
            queue_depth: w.depth().max(w.reported_queue),
            running_tasks: running,
            warm_models: w
                .warm
                .iter()
                .map(|m| self.fleet.models.name(m).to_string())
                .collect(),
            observed_speed: Some(w.speed),
        })
    }

    /// A job's spec as admitted (with the planner's tasks), put back together from the core's
    /// compact form; `task_spec` is the cheap way to one task.
    pub fn job_spec(&self, key: &str) -> Option<crate::api::JobSpec> {
        self.job_ids.get(key).map(|&j| self.spec_of(self.job(j)))
    }

    /// One task's spec as admitted.
    pub fn task_spec(&self, key: &str, task: &str) -> Option<crate::api::TaskSpec> {
        let job = self.job(*self.job_ids.get(key)?);
        match job.task_index(task) {
            Some(t) => Some(self.task_spec_of(&job.tasks[t as usize])),
            // Tasks are not built when admission refused the job: its spec keeps them.
            None => job.spec.tasks.iter().find(|t| t.id == task).cloned(),
        }
    }

    /// Job slots the core holds: live jobs plus forgotten ones whose slot awaits reuse. It
    /// follows the peak of live jobs, not the number of jobs ever submitted.
    pub fn job_slots(&self) -> usize {
        self.jobs.len()
    }

    /// The live jobs, oldest first (slots are reused, so their order is not the age).
    pub(crate) fn jobs_by_age(&self) -> impl Iterator<Item = &JobRt> {
        let mut jobs: Vec<&JobRt> = self.jobs.iter().flatten().collect();
        jobs.sort_unstable_by_key(|j| j.seq);
        jobs.into_iter()
    }

    pub(crate) fn spec_of(&self, job: &JobRt) -> crate::api::JobSpec {
        let mut spec = (*job.spec).clone();
        if !job.tasks.is_empty() {
            spec.tasks = job.tasks.iter().map(|t| self.task_spec_of(t)).collect();
        }
        spec
    }

    fn task_spec_of(&self, t: &TaskRt) -> crate::api::TaskSpec {
        let payload = t.payload.as_deref();
        let text = |f: fn(&TaskPayload) -> &Option<String>| payload.and_then(|p| f(p).clone());
        let list = |f: fn(&TaskPayload) -> &Vec<String>| payload.map(|p| f(p).clone());
        crate::api::TaskSpec {
            id: t.id.to_string(),
            kind: t.kind,
            resources: crate::api::Resources {
                cpu_millis: t.cpu,
                memory_mib: t.mem,
                gpus: t.gpus,
            },
            model: t.model.map(|m| self.fleet.models.name(m).to_string()),
            tools: list(|p| &p.tools).unwrap_or_default(),
            locality: text(|p| &p.locality),
            classification: text(|p| &p.classification),
            interaction_class: t.interaction,
            reasoning_required: t.reasoning,
            timeout_seconds: t.timeout_s,
            retry: t.retry,
            expected_duration_ms: t.hinted.then_some(t.hint_ms),
            command: list(|p| &p.command).unwrap_or_default(),
            input: text(|p| &p.input),
        }
    }

    /// A job's trace ID and submission time, without building its whole status.
    pub fn job_trace(&self, key: &str) -> Option<(&str, crate::Timestamp)> {
        let job = self.job(*self.job_ids.get(key)?);
        Some((&job.trace_id, job.submitted))
    }

    /// A job's phase, without building its whole status.
    pub fn job_phase(&self, key: &str) -> Option<crate::api::JobPhase> {
        self.job_ids.get(key).map(|&j| self.job(j).phase)
    }

    /// A worker's health, without building its whole status.
    pub fn worker_health(&self, name: &str) -> Option<crate::api::Health> {
        self.fleet
            .id(name)
            .map(|w| self.fleet.workers[w as usize].health)
    }

    /// Names of the known jobs, oldest first.
    pub fn job_keys(&self) -> Vec<String> {
        self.jobs_by_age().map(|j| j.key.to_string()).collect()
    }

    /// The health of each registered worker, in registration order.
    pub fn worker_healths(&self) -> impl Iterator<Item = crate::api::Health> + '_ {
        self.fleet
            .workers
            .iter()
            .filter(|w| w.registered)
            .map(|w| w.health)
    }

    /// How many policies and model routes are in force.
    pub fn policies_and_routes(&self) -> (usize, usize) {
        (self.policies.len(), self.routes.len())
    }

    /// Names of the registered workers, in registration order.
    pub fn worker_names(&self) -> Vec<String> {
        self.fleet
            .workers
            .iter()
            .filter(|w| w.registered)
            .map(|w| w.name.to_string())
            .collect()
    }

    /// Checks the core's internal consistency. Simulator sweeps call it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut usage = vec![crate::policy::Usage::default(); self.tenants.len()];
        for (j, job) in self
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(j, o)| o.as_ref().map(|o| (j as u32, o)))
        {
            let mut counted = crate::api::Progress {
                total: job.tasks.len() as u32,
                ..Default::default()
            };
            for (t, task) in job.tasks.iter().enumerate() {
                *counted.slot(task.state.phase()) += 1;
                let parents_done =
                    job.dag.parents(t as u32).iter().all(|&p| {
                        matches!(job.tasks[p as usize].state, TaskState::Succeeded { .. })
                    });
                if let Some((w, ..)) = task.state.active() {
                    if !parents_done {
                        return Err(format!(
                            "{}/{} runs before its dependencies succeeded",
                            job.key, task.id
                        ));
                    }
                    if !self.fleet.workers[w as usize]
                        .active
                        .contains(&(j, t as u32))
                    {
                        return Err(format!(
                            "{}/{} is active on {} but the worker does not list it",
                            job.key, task.id, self.fleet.workers[w as usize].name
                        ));
                    }
                    let u = &mut usage[job.tenant as usize];
                    u.running_tasks += 1;
                    u.cpu_millis += u64::from(task.cpu);
                    u.gpus += task.gpus;
                }
                if matches!(task.state, TaskState::Succeeded { .. }) && !parents_done {
                    return Err(format!(
                        "{}/{} succeeded before its dependencies",
                        job.key, task.id
                    ));
                }
                if task.attempt > task.retry.limit + 1 {
                    return Err(format!(
                        "{}/{} ran {} attempts, over its limit of {} retries",
                        job.key, task.id, task.attempt, task.retry.limit
                    ));
                }
            }
            if counted != job.progress {
                return Err(format!(
                    "{}: progress {:?} does not match the tasks {:?}",
                    job.key, job.progress, counted
                ));
            }
            if job.phase.is_terminal()
                && job.progress.finished() != job.progress.total
                && !job.tasks.is_empty()
            {
                return Err(format!(
                    "{} is {:?} with unfinished tasks",
                    job.key, job.phase
                ));
            }
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let u = &usage[i];
            if (u.running_tasks, u.cpu_millis, u.gpus)
                != (t.usage.running_tasks, t.usage.cpu_millis, t.usage.gpus)
            {
                return Err(format!(
                    "tenant {} usage {:?} does not match its running tasks {:?}",
                    t.name, t.usage, u
                ));
            }
        }
        for w in &self.fleet.workers {
            let (mut cpu, mut mem, mut gpus) = (0u64, 0u64, 0u64);
            for &(j, t) in &w.active {
                let task = &self.job(j).tasks[t as usize];
                cpu += u64::from(task.cpu);
                mem += u64::from(task.mem);
                gpus += u64::from(task.gpus);
            }
            let c = &w.caps;
            if cpu > u64::from(c.cpu_millis)
                || mem > u64::from(c.memory_mib)
                || gpus > u64::from(c.gpus)
            {
                return Err(format!(
                    "worker {} runs over its capacity: {cpu}m cpu, {mem}Mi, {gpus} gpus",
                    w.name
                ));
            }
            if u64::from(w.free_cpu) + cpu != u64::from(c.cpu_millis) {
                return Err(format!(
                    "worker {} free cpu {} does not match its attempts ({cpu}m)",
                    w.name, w.free_cpu
                ));
            }
        }
        // Each class's placement indices hold exactly its eligible members, at their current
        // load and free capacity.
        for (c, class) in self.fleet.classes.iter().enumerate() {
            let members = self
                .fleet
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.eligible() && w.class as usize == c);
            let by_load: std::collections::BTreeSet<_> = members
                .clone()
                .map(|(id, w)| (w.depth(), w.tie_key, id as u32))
                .collect();
            let by_free: std::collections::BTreeSet<_> = members
                .map(|(id, w)| (w.free_gpus, w.free_cpu, w.tie_key, id as u32))
                .collect();
            if by_load != class.by_load || by_free != class.by_free {
                return Err(format!(
                    "class {c}'s load or free-capacity index does not match its eligible workers"
                ));
            }
        }
        self.queue.check_blocked()
    }
}
