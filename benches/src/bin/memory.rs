//! Heap memory the core holds per worker and per task, counted by dhat's allocator.
//!
//! Run: `cargo run --release -p splai-benches --bin memory`.

use splai_benches::{Mix, register_fleet};
use splai_scheduler::api::{JobSpec, Resources, TaskSpec};
use splai_scheduler::{Event, Scheduler, Settings, Strategy, Timestamp};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn heap() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mix = Mix::load();

    let before = heap();
    let mut s = Scheduler::new(Settings::default(), Strategy::Splai, 1);
    register_fleet(&mut s, &mix, 10_000);
    let workers = heap() - before;

    // A second scheduler with no workers, so every task stays queued with its full state. The
    // specs are made inside the window: the core keeps them, so they count.
    let before = heap();
    let mut t = Scheduler::new(Settings::default(), Strategy::Splai, 1);
    for j in 0..100 {
        let spec = mix.wide_job("acme", 1000, j);
        t.handle(
            Event::JobSubmitted {
                key: format!("j{j}"),
                spec,
                trace_id: None,
            },
            Timestamp(0),
        );
    }
    let tasks = heap() - before;
    assert_eq!(t.queue_len(), 100_000);

    // The operator's benchmark shape: many small jobs, each of ten one-cpu tasks.
    let before = heap();
    let mut u = Scheduler::new(Settings::default(), Strategy::Splai, 1);
    for j in 0..10_000 {
        let spec = small_job(j);
        u.handle(
            Event::JobSubmitted {
                key: format!("default/job-{j}"),
                spec,
                trace_id: None,
            },
            Timestamp(0),
        );
    }
    let jobs = heap() - before;
    assert_eq!(u.queue_len(), 100_000);
    println!("| what | count | heap bytes | bytes each |");
    println!("|---|---|---|---|");
    println!(
        "| workers (registered, with two warm models) | 10,000 | {workers} | {} |",
        workers / 10_000
    );
    println!(
        "| tasks (queued, spec kept for snapshots) | 100,000 | {tasks} | {} |",
        tasks / 100_000
    );
    println!(
        "| jobs of ten tasks (queued, spec kept) | 10,000 | {jobs} | {} |",
        jobs / 10_000
    );
    drop(s);
}

/// A job of ten independent one-cpu command tasks, like the operator benchmark submits.
fn small_job(j: usize) -> JobSpec {
    JobSpec {
        tenant: "bench".into(),
        tasks: (0..10)
            .map(|i| TaskSpec {
                id: format!("t{i}"),
                command: vec!["sh".into(), "-c".into(), format!("echo job {j} task {i}")],
                resources: Resources {
                    cpu_millis: 1000,
                    memory_mib: 128,
                    gpus: 0,
                },
                ..TaskSpec::default()
            })
            .collect(),
        ..JobSpec::default()
    }
}
