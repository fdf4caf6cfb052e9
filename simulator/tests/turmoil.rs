//! The turmoil engine: the real agent protocol over turmoil's simulated network, checked on the
//! committed scenarios and against the discrete-event engine.
//!
//! turmoil steps every host every simulated millisecond, which a debug build does slowly, so
//! the fault scenarios run once each (shared by the tests that read them) and quickstart runs a
//! shortened copy.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{outputs, scenario};

use splai_scheduler::Strategy;
use splai_scheduler::api::Outcome;
use splai_sim::record::AttemptRow;
use splai_sim::scenario::{FaultKind, Scenario};
use splai_sim::{Engine, Run, RunResult};

/// Quickstart with a third of its jobs: the same fleet, tenants, quotas, routes, models and
/// noise, over about five simulated minutes instead of fourteen.
fn short_quickstart() -> Scenario {
    let mut sc = scenario("quickstart");
    for g in &mut sc.workload.generators {
        g.count = 20;
    }
    sc
}

/// Quota contention with fewer jobs. Its tasks have no duration noise, so many reports reach
/// the control plane in the same millisecond.
fn short_quota_contention() -> Scenario {
    let mut sc = scenario("quota-contention");
    for g in &mut sc.workload.generators {
        g.count = 24;
    }
    sc
}

fn run(sc: &Scenario, seed: u64, engine: Engine) -> RunResult {
    Run {
        scenario: sc,
        seed,
        strategy: Strategy::Splai,
        engine,
        check_invariants: true,
        explain: None,
    }
    .execute()
    .unwrap_or_else(|e| panic!("{} under {}: {e:#}", sc.name, engine.name()))
}

/// One turmoil run of a committed scenario at its own seed (or of the short quickstart at seed
/// 1), shared by every test that reads it.
fn turmoil_run(name: &str) -> &'static RunResult {
    static RUNS: [(&str, OnceLock<RunResult>); 6] = [
        ("short-quickstart", OnceLock::new()),
        ("heartbeat-loss", OnceLock::new()),
        ("worker-freeze", OnceLock::new()),
        ("worker-crash", OnceLock::new()),
        ("partition", OnceLock::new()),
        ("flaky-tasks", OnceLock::new()),
    ];
    let (_, cell) = RUNS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no shared run of {name}"));
    cell.get_or_init(|| {
        if name == "short-quickstart" {
            return run(&short_quickstart(), 1, Engine::Turmoil);
        }
        let sc = scenario(name);
        run(&sc, sc.seed, Engine::Turmoil)
    })
}

/// Every job ended, no task was lost or committed twice, and the core's invariants held after
/// every event.
fn assert_nothing_lost_or_duplicated(r: &RunResult) {
    let s = &r.summary;
    assert_eq!(r.check_failures(), Vec::<String>::new(), "{}", s.scenario);
    assert!(s.tasks_total > 0, "{} ran no task", s.scenario);
    assert_eq!(s.jobs_unfinished, 0, "{}", s.scenario);
    assert_eq!(
        s.jobs_completed + s.jobs_failed,
        s.jobs_total,
        "{}",
        s.scenario
    );
    assert_eq!(s.tasks_lost, 0, "{}", s.scenario);
    assert_eq!(s.duplicate_completions, 0, "{}", s.scenario);
    assert_eq!(s.invariant_violations, 0, "{}", s.scenario);
}

/// Attempts with `outcome` on a worker (`rack-a-0`) or on any worker of a group (`rack-a-*`).
fn attempts_on<'a>(r: &'a RunResult, workers: &str, outcome: Outcome) -> Vec<&'a AttemptRow> {
    let on = |w: &str| match workers.strip_suffix('*') {
        Some(group) => w.starts_with(group),
        None => w == workers,
    };
    r.recorder
        .attempts
        .iter()
        .filter(|a| on(&a.worker) && a.outcome == outcome)
        .collect()
}

/// Each decision the core made: which attempt of which task went to which worker, and when.
fn decisions(r: &RunResult) -> Vec<(String, String, u32, String, u64)> {
    let mut out: Vec<_> = r
        .recorder
        .attempts
        .iter()
        .map(|a| {
            let (job, task, worker) = (a.job.clone(), a.task.clone(), a.worker.clone());
            (job, task, a.attempt, worker, a.assigned_ms)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn quickstart_runs_over_turmoil_with_every_job_ended_and_no_task_lost_or_committed_twice() {
    let r = turmoil_run("short-quickstart");
    assert_nothing_lost_or_duplicated(r);
    assert_eq!(r.summary.engine, "turmoil");
    assert_eq!(r.summary.jobs_completed, 40);
    // The workers' warm caches worked through the executor's load reports.
    assert!(r.summary.cold_starts > 0 && r.summary.warm_cache_hit_rate > 0.5);
}

#[test]
fn silent_workers_over_turmoil_have_their_tasks_requeued_and_nothing_is_lost_or_committed_twice() {
    let r = turmoil_run("heartbeat-loss");
    assert_nothing_lost_or_duplicated(r);
    for worker in ["rack-a-0", "rack-b-2"] {
        let lost = attempts_on(r, worker, Outcome::WorkerLost);
        assert!(!lost.is_empty(), "{worker} was never declared lost");
    }
    assert!(r.summary.retries > 0);
}

#[test]
fn a_frozen_agent_over_turmoil_is_lost_only_when_frozen_past_lost_after_and_nothing_is_committed_twice()
 {
    let r = turmoil_run("worker-freeze");
    assert_nothing_lost_or_duplicated(r);
    // Frozen for 60 s (lostAfterMs is 30 s): declared lost, its tasks requeued.
    assert!(!attempts_on(r, "rack-b-2", Outcome::WorkerLost).is_empty());
    // Frozen for 20 s (from 20 s to 40 s): back in time, nothing lost, and the attempts it was
    // running went on while it was stopped and succeeded.
    assert!(attempts_on(r, "rack-a-0", Outcome::WorkerLost).is_empty());
    let across = attempts_on(r, "rack-a-0", Outcome::Succeeded)
        .into_iter()
        .filter(|a| a.started_ms.is_some_and(|s| s < 20_000) && a.finished_ms > 40_000)
        .count();
    assert!(across > 0);
}

#[test]
fn crashed_workers_over_turmoil_come_back_and_their_lost_attempts_run_again() {
    let r = turmoil_run("worker-crash");
    assert_nothing_lost_or_duplicated(r);
    // rack-a crashes at 30 s for a minute: its running attempts are lost ...
    let lost = attempts_on(r, "rack-a-*", Outcome::WorkerLost);
    assert!(!lost.is_empty());
    assert!(lost.iter().all(|a| a.finished_ms >= 30_000));
    // ... and once restarted (after 90 s) its workers run attempts again.
    let after = attempts_on(r, "rack-a-*", Outcome::Succeeded)
        .into_iter()
        .filter(|a| a.assigned_ms > 90_000)
        .count();
    assert!(after > 0, "no work went to rack-a after its restart");
}

#[test]
fn a_partitioned_zone_over_turmoil_loses_its_attempts_to_the_other_zone_and_nothing_is_lost() {
    let r = turmoil_run("partition");
    assert_nothing_lost_or_duplicated(r);
    // zone-a is cut off from 25 s to 70 s; its attempts end as lost, not as duplicates.
    let lost = attempts_on(r, "zone-a-*", Outcome::WorkerLost);
    assert!(!lost.is_empty());
    assert!(
        lost.iter()
            .all(|a| (25_000..=70_000).contains(&a.finished_ms))
    );
    let rerun_in_zone_b = r
        .recorder
        .attempts
        .iter()
        .filter(|a| a.worker.starts_with("zone-b") && a.assigned_ms > 25_000)
        .count();
    assert!(rerun_in_zone_b > 0);
}

#[test]
fn flaky_tasks_over_turmoil_retry_within_their_limits_and_every_job_ends() {
    let r = turmoil_run("flaky-tasks");
    assert_nothing_lost_or_duplicated(r);
    let failed = r
        .recorder
        .attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Failed)
        .count();
    assert!(failed > 0, "no injected failure happened");
    assert!(r.summary.timeouts > 0, "the slow worker caused no timeout");
    // Retry limits are 3 (commands) and 2 (inference): at most 4 attempts of any task.
    assert!(r.recorder.attempts.iter().all(|a| a.attempt <= 4));
}

#[test]
fn the_same_seed_twice_over_turmoil_gives_byte_identical_outputs() {
    // Partition exercises reconnects, resent reports, link latency and cancellations.
    let sc = scenario("partition");
    let first = turmoil_run("partition");
    let second = run(&sc, sc.seed, Engine::Turmoil);
    assert_eq!(first.summary.output_digest, second.summary.output_digest);
    assert_eq!(first.recorder.attempts, second.recorder.attempts);
    assert_eq!(first.recorder.cold, second.recorder.cold);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first.write(a.path()).unwrap();
    second.write(b.path()).unwrap();
    let (fa, fb) = (outputs(a.path()), outputs(b.path()));
    assert_eq!(fa.len(), 7);
    assert_eq!(fa, fb);
}

#[test]
fn both_engines_make_identical_decisions_on_a_fault_free_scenario() {
    let sc = short_quickstart();
    assert!(sc.faults.is_empty());
    let (t, d) = (turmoil_run("short-quickstart"), run(&sc, 1, Engine::Des));
    assert!(decisions(t).len() >= 140, "{}", decisions(t).len());
    assert_eq!(decisions(t), decisions(&d));
    // Not only the decisions: every attempt starts, ends, loads its model and fails the same,
    // in the same order, and so every output is the same.
    assert_eq!(t.recorder.attempts, d.recorder.attempts);
    assert_eq!(t.recorder.jobs, d.recorder.jobs);
    assert_eq!(t.recorder.timeline, d.recorder.timeline);
    assert_eq!(t.summary.output_digest, d.summary.output_digest);
}

#[test]
fn reports_landing_in_the_same_millisecond_are_handled_in_the_same_order_by_both_engines() {
    let sc = short_quota_contention();
    let (t, d) = (run(&sc, 1, Engine::Turmoil), run(&sc, 1, Engine::Des));
    // The scenario really does deliver simultaneous reports from different workers.
    let mut workers_by_end: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for a in &d.recorder.attempts {
        workers_by_end
            .entry(a.finished_ms)
            .or_default()
            .push(&a.worker);
    }
    let ties = workers_by_end
        .values()
        .filter(|w| w.iter().any(|x| *x != w[0]))
        .count();
    assert!(ties >= 10, "only {ties} simultaneous reports");
    assert_eq!(t.recorder.attempts, d.recorder.attempts);
    assert_eq!(t.summary.output_digest, d.summary.output_digest);
}

#[test]
fn both_engines_agree_on_heartbeat_loss_freezes_crashes_slow_workers_and_task_failures_too() {
    for name in [
        "heartbeat-loss",
        "worker-freeze",
        "worker-crash",
        "flaky-tasks",
    ] {
        let sc = scenario(name);
        let t = turmoil_run(name);
        let d = run(&sc, sc.seed, Engine::Des);
        assert_eq!(decisions(t), decisions(&d), "{name}");
        assert_eq!(t.recorder.attempts, d.recorder.attempts, "{name}");
    }
}

#[test]
fn after_a_partition_heals_the_engines_differ_only_by_the_agents_reconnecting() {
    let sc = scenario("partition");
    let repaired = sc
        .faults
        .iter()
        .find_map(|f| match f.kind {
            FaultKind::Partition { .. } => f.duration_ms.map(|d| f.at_ms + d),
            _ => None,
        })
        .unwrap();
    let t = turmoil_run("partition");
    let d = run(&sc, sc.seed, Engine::Des);
    // Until the repair both engines decide alike. After it, a DES agent's next heartbeat just
    // gets through, while a real agent must first notice that its connection is dead, back off
    // and reconnect, so zone-a returns later and the decisions part.
    let before = |r: &RunResult| {
        let mut v = decisions(r);
        v.retain(|a| a.4 < repaired);
        v
    };
    assert!(before(t).len() > 50);
    assert_eq!(before(t), before(&d));
    let back = |r: &RunResult| {
        r.recorder
            .attempts
            .iter()
            .filter(|a| a.worker.starts_with("zone-a") && a.assigned_ms >= repaired)
            .map(|a| a.assigned_ms)
            .min()
            .unwrap()
    };
    assert!(back(t) > back(&d), "{} <= {}", back(t), back(&d));
}

#[test]
fn a_run_cut_short_by_the_horizon_stops_at_the_horizon_in_both_engines() {
    let mut sc = short_quickstart();
    sc.horizon_seconds = 60;
    let (t, d) = (run(&sc, 1, Engine::Turmoil), run(&sc, 1, Engine::Des));
    assert!(t.summary.jobs_unfinished > 0);
    assert_eq!(t.recorder.timeline.last().unwrap().t_ms, 60_000);
    assert_eq!(t.recorder.timeline, d.recorder.timeline);
    assert_eq!(t.recorder.attempts, d.recorder.attempts);
}

#[test]
fn a_submit_latency_delays_every_jobs_first_placement_alike_in_both_engines() {
    let mut sc = short_quota_contention();
    for g in &mut sc.workload.generators {
        g.count = 6;
    }
    let instant = run(&sc, 1, Engine::Des);
    sc.submit_latency_ms = 700;
    let (t, d) = (run(&sc, 1, Engine::Turmoil), run(&sc, 1, Engine::Des));
    assert_eq!(t.recorder.attempts, d.recorder.attempts);
    assert_eq!(t.recorder.jobs, d.recorder.jobs);
    for (key, job) in &d.recorder.jobs {
        // Jobs count from their submission, which the latency does not move.
        assert_eq!(job.submitted_ms, instant.recorder.jobs[key].submitted_ms);
        let first = d
            .recorder
            .attempts
            .iter()
            .filter(|a| &a.job == key)
            .map(|a| a.assigned_ms)
            .min()
            .unwrap();
        assert!(first >= job.submitted_ms + 700, "{key}: placed at {first}");
    }
    assert!(d.summary.jct_mean_s > instant.summary.jct_mean_s);
}
