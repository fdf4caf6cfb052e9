//! The operator's Prometheus metrics, served as text on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label, such as `[("controller", "job")]`.
pub type Label = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    /// Watch events and agent messages handled, by controller (`job`, `worker`, `policy`,
    /// `route`, `agent`).
    pub reconciles: Family<Label, Counter>,
    /// Writes that failed and will be tried again, by controller.
    pub reconcile_errors: Family<Label, Counter>,
    /// Writes the API server refused (400, 422, or 404 for a deleted worker) and that are not
    /// tried again, by controller.
    pub writes_refused: Family<Label, Counter>,
    /// Wall time of each call into the driver that assigned at least one task (the core's
    /// decisions and the driver's bookkeeping of them), per assignment; see [`Metrics::decided`].
    pub decision_seconds: Histogram,
    pub assignments: Counter,
    /// Ready tasks waiting for a worker.
    pub queue_depth: Gauge,
    pub heartbeats: Counter,
    /// Events the core ignored, by reason (`Ignored::reason`): `stale_report` counts reports for
    /// an attempt that is not the task's current one, which fencing keeps from being committed.
    pub ignored: Family<Label, Counter>,
    /// Cancels sent to agents, by reason (`CancelReason::label`): `orphaned` is an attempt an
    /// agent still runs that is no longer current (it was retried elsewhere, or its job ended).
    pub cancels: Family<Label, Counter>,
    /// Writes to the API server, by kind (`job_status`, `job_spec`, `job_meta`, `worker_status`,
    /// `worker_create`, `event`).
    pub api_writes: Family<Label, Counter>,
    /// Jobs this operator tracks, by phase; ended jobs count until deleted.
    pub jobs: Family<Label, Gauge>,
    /// Registered workers, by health; set at each flush.
    pub workers: Family<Label, Gauge>,
    /// Policies and model routes the core enforces.
    pub policies: Gauge,
    pub routes: Gauge,
    /// Lists each watch completed, by controller: one at start, then one per re-list (after
    /// the watch expired or the API server restarted).
    pub watch_lists: Family<Label, Counter>,
    /// Objects found gone by a watch's list, by controller: deleted while the watch was
    /// broken, so no delete event was ever seen.
    pub gone_at_list: Family<Label, Counter>,
    /// Agents whose registration was refused, by reason (`agent_auth::Refusal::label`).
    pub agents_refused: Family<Label, Counter>,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("splai");
        let m = Metrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            writes_refused: Family::default(),
            decision_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
            assignments: Counter::default(),
            queue_depth: Gauge::default(),
            heartbeats: Counter::default(),
            ignored: Family::default(),
            cancels: Family::default(),
            api_writes: Family::default(),
            jobs: Family::default(),
            workers: Family::default(),
            policies: Gauge::default(),
            routes: Gauge::default(),
            watch_lists: Family::default(),
            gone_at_list: Family::default(),
            agents_refused: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconcile",
            "Watch events and agent messages handled, by controller",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed writes that are retried, by controller",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "writes_refused",
            "Writes the API server refused, not retried, by controller",
            m.writes_refused.clone(),
        );
        registry.register(
            "scheduling_decision_seconds",
            "Scheduling time per assignment, for calls that assigned tasks",
            m.decision_seconds.clone(),
        );
        registry.register(
            "assignments",
            "Task attempts assigned to workers",
            m.assignments.clone(),
        );
        registry.register(
            "queue_depth",
            "Ready tasks waiting for a worker",
            m.queue_depth.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats received from agents",
            m.heartbeats.clone(),
        );
        registry.register(
            "ignored_events",
            "Events the scheduling core ignored, by reason",
            m.ignored.clone(),
        );
        registry.register(
            "cancels",
            "Cancels sent to agents, by reason",
            m.cancels.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind",
            m.api_writes.clone(),
        );
        registry.register("jobs", "Jobs by phase", m.jobs.clone());
        registry.register("workers", "Registered workers by health", m.workers.clone());
        registry.register("policies", "Policies in force", m.policies.clone());
        registry.register("model_routes", "Model routes in force", m.routes.clone());
        registry.register(
            "watch_lists",
            "Lists completed by each watch, the first and every re-list",
            m.watch_lists.clone(),
        );
        registry.register(
            "watch_gone_at_list",
            "Objects a watch's list found deleted without a delete event",
            m.gone_at_list.clone(),
        );
        registry.register(
            "agents_refused",
            "Agent registrations refused, by reason",
            m.agents_refused.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// One call into the driver took `elapsed` and assigned `assigned` tasks: each assignment
    /// is observed as taking an equal share. The driver reads no clock, so its caller times it.
    pub fn decided(&self, elapsed: Duration, assigned: u64) {
        if assigned == 0 {
            return;
        }
        let per = elapsed.as_secs_f64() / assigned as f64;
        for _ in 0..assigned {
            self.decision_seconds.observe(per);
        }
    }

    /// How many events the core ignored for `reason`, for tests.
    pub fn ignored(&self, reason: &'static str) -> u64 {
        self.ignored.get_or_create(&[("reason", reason)]).get()
    }

    /// How many cancels went to agents for `reason`, for tests.
    pub fn cancels(&self, reason: &'static str) -> u64 {
        self.cancels.get_or_create(&[("reason", reason)]).get()
    }

    /// Agents refused for `reason`, for tests.
    pub fn refused_agents(&self, reason: &'static str) -> u64 {
        self.agents_refused
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Writes of `controller` the API server refused, for tests.
    pub fn refused(&self, controller: &'static str) -> u64 {
        self.writes_refused
            .get_or_create(&[("controller", controller)])
            .get()
    }

    /// Failed writes of `controller` that are retried, for tests.
    pub fn retried(&self, controller: &'static str) -> u64 {
        self.reconcile_errors
            .get_or_create(&[("controller", controller)])
            .get()
    }

    /// Objects of `controller`'s kind a list found gone, for tests.
    pub fn gone_at_list(&self, controller: &'static str) -> u64 {
        self.gone_at_list
            .get_or_create(&[("controller", controller)])
            .get()
    }

    /// Registered workers of every health (the labels of `driver::effects::health_label`),
    /// for tests.
    pub fn workers_registered(&self) -> i64 {
        ["Unknown", "Healthy", "Stale", "Lost"]
            .iter()
            .map(|&h| self.workers.get_or_create(&[("health", h)]).get())
            .sum()
    }

    /// The value of a counter family member, for tests and benchmarks.
    pub fn writes(&self, kind: &'static str) -> u64 {
        self.api_writes.get_or_create(&[("kind", kind)]).get()
    }
}
