//! Single-decision latency and memory per worker and per task.
//!
//! Keeps a fleet at a steady load (half its running slots taken) and times each call that
//! submits a one-task job and places it: validation, admission and one placement decision.
//! Prints p50, p99 and max per fleet size. (Memory is measured by the `memory` binary.)
//!
//! Run: `cargo run --release -p splai-benches --bin decision_latency`.

use std::time::Instant;

use splai_benches::{Mix, Rng, register_fleet};
use splai_scheduler::api::{AttemptRef, JobSpec};
use splai_scheduler::{Effect, Event, Scheduler, Settings, Strategy, Timestamp};

fn latency(mix: &Mix, workers: usize, decisions: usize) {
    let settings = Settings {
        stale_after_ms: u64::MAX / 4,
        lost_after_ms: u64::MAX / 4,
        ..Settings::default()
    };
    let mut s = Scheduler::new(settings, Strategy::Splai, 1);
    register_fleet(&mut s, mix, workers);
    let mut rng = Rng::new(9);
    let mut running: std::collections::VecDeque<(AttemptRef, String)> = Default::default();
    let target = workers * 4;
    let mut samples = Vec::with_capacity(decisions);
    let mut now = 1u64;
    for i in 0..decisions + target {
        now += 1;
        let spec = JobSpec {
            tenant: format!("t{}", i % 8),
            tasks: vec![mix.task("t".into(), &mut rng)],
            ..JobSpec::default()
        };
        let start = Instant::now();
        let out = s.handle(
            Event::JobSubmitted {
                key: format!("j{i}"),
                spec,
                trace_id: None,
            },
            Timestamp(now),
        );
        let took = start.elapsed();
        if i >= target {
            samples.push(took.as_nanos() as u64);
        }
        for e in out {
            if let Effect::Assign(a) = e {
                running.push_back((
                    AttemptRef {
                        job: a.job.to_string(),
                        task: a.task.to_string(),
                        attempt: a.attempt,
                    },
                    a.worker.to_string(),
                ));
            }
        }
        while running.len() > target {
            let (attempt, worker) = running.pop_front().unwrap();
            let key = attempt.job.clone();
            s.handle(
                Event::TaskSucceeded {
                    attempt,
                    worker,
                    artifact_uri: None,
                },
                Timestamp(now),
            );
            s.handle(Event::JobForgotten { key }, Timestamp(now));
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    println!(
        "| {workers} | {} | {:.1} | {:.1} | {:.1} | {} |",
        samples.len(),
        pct(0.50),
        pct(0.99),
        *samples.last().unwrap() as f64 / 1000.0,
        s.queue_len()
    );
}

fn main() {
    let mix = Mix::load();
    println!("| workers | decisions timed | p50 µs | p99 µs | max µs | still queued |");
    println!("|---|---|---|---|---|---|");
    for workers in [100, 1_000, 5_000, 10_000] {
        latency(&mix, workers, 20_000);
    }
}
