//! Property tests: random DAGs, fleets and event sequences. After every step the core's own
//! invariants hold (see `Scheduler::check_invariants`: dependencies before dependents, no worker
//! over capacity, counters and usage consistent, retries within limits); at the end every task
//! is terminal and no result was committed twice; and the same inputs give the same effects.

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use splai_scheduler::api::*;
use splai_scheduler::{
    Effect, Event, Heartbeat, Scheduler, Settings, Snapshot, Strategy as Placement, Timestamp,
};

/// Tasks as (cpu, retries), edges as (parent, child) with parent < child, and a priority.
type JobCase = (Vec<(u32, u32)>, Vec<(usize, usize)>, u32);

#[derive(Clone, Debug)]
struct Case {
    jobs: Vec<JobCase>,
    workers: Vec<u32>, // cpu of each worker; the first fits any task
    ops: Vec<(u8, u16)>,
    strategy: Placement,
}

fn case() -> impl Strategy<Value = Case> {
    let job = (1usize..8).prop_flat_map(|n| {
        (
            prop::collection::vec((prop::sample::select(vec![500u32, 1000, 2000]), 0u32..3), n),
            prop::collection::vec((0..n, 0..n), 0..n * 2),
            0u32..3,
        )
            .prop_map(|(tasks, edges, prio)| {
                let edges = edges.into_iter().filter(|(a, b)| a < b).collect();
                (tasks, edges, prio)
            })
    });
    (
        prop::collection::vec(job, 1..4),
        prop::collection::vec(prop::sample::select(vec![1000u32, 2000, 4000]), 1..4),
        prop::collection::vec((0u8..8, any::<u16>()), 0..80),
        prop::sample::select(Placement::ALL.to_vec()),
    )
        .prop_map(|(jobs, mut workers, ops, strategy)| {
            // Every task must fit some worker, or it would rightly wait forever.
            workers[0] = 4000;
            Case {
                jobs,
                workers,
                ops,
                strategy,
            }
        })
}

fn spec(tasks: &[(u32, u32)], edges: &[(usize, usize)], prio: u32) -> JobSpec {
    let mut b = JobBuilder::new(if prio.is_multiple_of(2) {
        "even"
    } else {
        "odd"
    })
    .priority(prio as i32);
    for (i, &(cpu, retries)) in tasks.iter().enumerate() {
        let mut t = task(&format!("t{i}"));
        t.resources.cpu_millis = cpu;
        t.retry.limit = retries;
        t.timeout_seconds = Some(120);
        b = b.task(t);
    }
    for &(p, c) in edges {
        b = b.dep(&format!("t{c}"), &[&format!("t{p}")]);
    }
    b.build()
}

/// Attempts in flight, as the workers would see them.
fn active(sim: &Sim) -> Vec<(AttemptRef, String)> {
    let mut out = Vec::new();
    for key in sim.s.job_keys() {
        for t in sim.status(&key).tasks {
            if matches!(t.phase, TaskPhase::Assigned | TaskPhase::Running) {
                out.push((
                    AttemptRef {
                        job: key.clone(),
                        task: t.id,
                        attempt: t.attempt,
                    },
                    t.worker.unwrap(),
                ));
            }
        }
    }
    out
}

/// Runs a case and returns every effect. Panics (failing the property) on a broken invariant.
fn run(c: &Case) -> Vec<Effect> {
    let settings = Settings {
        stale_after_ms: 10_000,
        lost_after_ms: 30_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, c.strategy);
    let names: Vec<String> = (0..c.workers.len()).map(|i| format!("w{i}")).collect();
    for (name, &cpu) in names.iter().zip(&c.workers) {
        sim.worker(name, caps(cpu, 1 << 20));
    }
    for (i, (tasks, edges, prio)) in c.jobs.iter().enumerate() {
        sim.submit(&format!("j{i}"), spec(tasks, edges, *prio));
    }
    let mut silent = vec![false; names.len()];
    for &(op, x) in &c.ops {
        let x = x as usize;
        let act = active(&sim);
        match op {
            0 | 1 if !act.is_empty() => {
                let (a, w) = act[x % act.len()].clone();
                sim.send(Event::TaskSucceeded {
                    attempt: a,
                    worker: w,
                    artifact_uri: Some("file:///x".into()),
                });
            }
            2 if !act.is_empty() => {
                let (a, w) = act[x % act.len()].clone();
                sim.send(Event::TaskFailed {
                    attempt: a,
                    worker: w,
                    error: "e".into(),
                    retryable: !x.is_multiple_of(3),
                });
            }
            3 if !act.is_empty() => {
                // A duplicate or stale report: an older attempt number than the current one.
                let (mut a, w) = act[x % act.len()].clone();
                a.attempt = a.attempt.saturating_sub(1 + (x % 2) as u32);
                sim.send(Event::TaskSucceeded {
                    attempt: a,
                    worker: w,
                    artifact_uri: None,
                });
            }
            4 => silent[x % names.len()] = !silent[x % names.len()],
            5 => {
                sim.now += (x % 40_000) as u64;
                for (i, n) in names.iter().enumerate() {
                    if !silent[i] {
                        sim.heartbeat(n, &[]);
                    }
                }
            }
            6 if x.is_multiple_of(7) => {
                sim.send(Event::JobCanceled {
                    key: format!("j{}", x % c.jobs.len()),
                });
            }
            _ => {
                sim.advance((x % 5_000) as u64);
            }
        }
    }
    // Drain: every worker comes back and every attempt succeeds, until all jobs end.
    for _ in 0..500 {
        if sim.s.job_keys().iter().all(|k| sim.phase(k).is_terminal()) {
            break;
        }
        sim.now += 2_000;
        for n in &names {
            sim.send(Event::Heartbeat(Heartbeat {
                worker: n.clone(),
                incarnation: 1,
                ..Heartbeat::default()
            }));
        }
        for (a, w) in active(&sim) {
            sim.send(Event::TaskSucceeded {
                attempt: a,
                worker: w,
                artifact_uri: Some("file:///x".into()),
            });
        }
    }
    for key in sim.s.job_keys() {
        let st = sim.status(&key);
        assert!(st.phase.is_terminal(), "{key} did not end: {st:?}");
        assert!(
            st.tasks.iter().all(|t| t.phase.is_terminal()),
            "{key} has unfinished tasks"
        );
    }
    let mut commits: HashMap<(String, String), u32> = HashMap::new();
    for e in &sim.effects {
        if let Effect::AttemptEnded(r) = e
            && r.outcome == Outcome::Succeeded
        {
            *commits.entry((r.job.clone(), r.task.clone())).or_default() += 1;
        }
    }
    assert!(
        commits.values().all(|&n| n == 1),
        "a result was committed twice: {commits:?}"
    );
    // Rebuilding from the final state gives the same state, but that no agent has been heard
    // from since the rebuild.
    sim.send(Event::Tick);
    let snap = sim.s.snapshot();
    let expected = Snapshot {
        workers: snap
            .workers
            .iter()
            .cloned()
            .map(|w| w.restored(Timestamp(sim.now)))
            .collect(),
        ..snap.clone()
    };
    let (again, _) = Scheduler::rebuild(
        sim.s.settings().clone(),
        c.strategy,
        7,
        snap.clone(),
        Timestamp(sim.now),
    );
    let (a, b) = (
        serde_json::to_string_pretty(&again.snapshot()).unwrap(),
        serde_json::to_string_pretty(&expected).unwrap(),
    );
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| format!("line {i}: rebuilt {x} | original {y}"))
            .take(5)
            .collect();
        panic!(
            "the rebuilt state differs from the original at {}:\n{}\n{:?}",
            sim.now,
            diff.join("\n"),
            snap.workers
                .iter()
                .map(|w| (&w.name, w.status.health, w.status.last_heartbeat))
                .collect::<Vec<_>>()
        );
    }
    sim.effects
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_and_event_sequences_keep_every_invariant(c in case()) {
        run(&c);
    }

    #[test]
    fn the_same_inputs_give_the_same_effects(c in case()) {
        prop_assert_eq!(run(&c), run(&c));
    }

    #[test]
    fn retries_never_exceed_their_limit(c in case()) {
        let effects = run(&c);
        let limits: HashMap<String, u32> = c.jobs.iter().enumerate().flat_map(|(j, (tasks, _, _))| {
            tasks.iter().enumerate().map(move |(t, &(_, r))| (format!("j{j}/t{t}"), r))
        }).collect();
        for e in &effects {
            if let Effect::Assign(a) = e {
                let limit = limits[&format!("{}/{}", a.job, a.task)];
                prop_assert!(a.attempt <= limit + 1, "attempt {} over a limit of {} retries", a.attempt, limit);
            }
        }
    }
}
