//! Heap memory the core holds per worker and per task, counted by dhat's allocator.
//!
//! Run: `cargo run --release -p splai-benches --bin memory`.

use splai_benches::{Mix, register_fleet};
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
    drop(s);
}
