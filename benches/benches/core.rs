//! Criterion benchmarks of the core: placement throughput by fleet size, and DAG validation.
//!
//! Run: `cargo bench -p splai-benches --bench core`. Numbers go in BENCHMARKS.md.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use splai_benches::{Mix, layered_dag, register_fleet};
use splai_scheduler::{Event, Limits, Scheduler, Settings, Strategy, Timestamp};

fn fleet(mix: &Mix, n: usize) -> Scheduler {
    let mut s = Scheduler::new(Settings::default(), Strategy::Splai, 1);
    register_fleet(&mut s, mix, n);
    s
}

fn placement(c: &mut Criterion) {
    let mix = Mix::load();
    const TASKS: usize = 1000;
    let job = mix.wide_job("acme", TASKS, 7);
    let mut g = c.benchmark_group("placement");
    g.sample_size(10);
    g.throughput(Throughput::Elements(TASKS as u64));
    for workers in [100, 1_000, 5_000, 10_000] {
        let base = fleet(&mix, workers);
        let snapshot = base.snapshot();
        g.bench_with_input(BenchmarkId::from_parameter(workers), &workers, |b, _| {
            b.iter_batched(
                || {
                    (
                        Scheduler::rebuild(
                            Settings::default(),
                            Strategy::Splai,
                            1,
                            snapshot.clone(),
                            Timestamp(0),
                        )
                        .0,
                        job.clone(),
                    )
                },
                |(mut s, spec)| {
                    let out = s.handle(
                        Event::JobSubmitted {
                            key: "j".into(),
                            spec,
                            trace_id: None,
                        },
                        Timestamp(0),
                    );
                    assert!(
                        s.stats().decisions as usize > TASKS * 9 / 10,
                        "most tasks must be placed: {}",
                        s.stats().decisions
                    );
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn validation(c: &mut Criterion) {
    let spec = layered_dag(10_000, 100, 3);
    let limits = Limits::default();
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("10000-task-dag", |b| {
        b.iter(|| splai_scheduler::dag::validate(&spec, &limits).unwrap())
    });
    g.finish();
}

criterion_group!(benches, placement, validation);
criterion_main!(benches);
