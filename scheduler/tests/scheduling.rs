mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::score::Term;
use splai_scheduler::{Effect, Event, QueueOrder, Settings, Strategy};

fn gpu(n: u32) -> Capabilities {
    Capabilities {
        gpus: n,
        ..caps(8000, 32768)
    }
}

#[test]
fn a_task_goes_only_to_workers_that_serve_its_model_and_offer_its_tools() {
    let mut sim = Sim::new();
    sim.worker("plain", caps(8000, 8192));
    sim.worker(
        "llm",
        Capabilities {
            models: vec!["llama".into()],
            ..caps(8000, 8192)
        },
    );
    sim.worker(
        "tooled",
        Capabilities {
            models: vec!["*".into()],
            tools: vec!["ffmpeg".into()],
            ..caps(8000, 8192)
        },
    );
    let mut video = task("video");
    video.tools = vec!["ffmpeg".into()];
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(inference("chat", "llama"))
            .task(video)
            .task(inference("other", "mistral"))
            .build(),
    );
    assert_eq!(&*sim.assigned("j", "video").unwrap().worker, "tooled");
    assert_eq!(
        &*sim.assigned("j", "other").unwrap().worker,
        "tooled",
        "`*` serves any model"
    );
    assert_ne!(&*sim.assigned("j", "chat").unwrap().worker, "plain");
}

#[test]
fn gpu_tasks_take_the_tightest_gpu_fit_and_cpu_tasks_avoid_gpu_workers() {
    let mut sim = Sim::new();
    sim.worker("big", gpu(8));
    sim.worker("small", gpu(1));
    sim.worker("cpu", caps(8000, 32768));
    let mut train = task("train");
    train.resources.gpus = 1;
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(train)
            .task(task("prep"))
            .build(),
    );
    assert_eq!(&*sim.assigned("j", "train").unwrap().worker, "small");
    assert_eq!(&*sim.assigned("j", "prep").unwrap().worker, "cpu");
}

#[test]
fn the_worker_with_the_model_warm_wins_and_the_explanation_says_why() {
    let mut sim = Sim::new();
    let serve = || Capabilities {
        models: vec!["llama".into()],
        ..caps(8000, 8192)
    };
    sim.worker("cold", serve());
    sim.worker("warm", serve());
    sim.heartbeat("warm", &["llama"]);
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(inference("chat", "llama"))
            .build(),
    );
    let a = sim.assigned("j", "chat").unwrap();
    assert_eq!(&*a.worker, "warm");
    let e = &a.explanation;
    assert_eq!(e.terms.model_warm_cache, 1.0);
    assert!(!e.cold_start);
    let r = e.runner_up.as_ref().expect("a runner-up");
    assert_eq!((&*r.worker, r.lost_on), ("cold", Term::ModelWarmCache));
    let text = e.to_string();
    assert!(
        text.contains("splai chose warm") && text.contains("runner-up cold"),
        "{text}"
    );
    assert!(r.score < e.score);
}

#[test]
fn the_preferred_locality_breaks_an_otherwise_even_choice() {
    let mut sim = Sim::new();
    sim.worker(
        "a",
        Capabilities {
            locality: Some("zone-a".into()),
            ..caps(4000, 4096)
        },
    );
    sim.worker(
        "b",
        Capabilities {
            locality: Some("zone-b".into()),
            ..caps(4000, 4096)
        },
    );
    let mut t = task("t");
    t.locality = Some("zone-b".into());
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    let a = sim.assigned("j", "t").unwrap();
    assert_eq!((&*a.worker, a.explanation.terms.locality_score), ("b", 1.0));
}

#[test]
fn shorter_queues_and_faster_workers_score_higher() {
    let mut sim = Sim::new();
    sim.worker(
        "slow",
        Capabilities {
            speed_factor: 0.5,
            ..caps(8000, 8192)
        },
    );
    sim.worker(
        "fast",
        Capabilities {
            speed_factor: 2.0,
            ..caps(8000, 8192)
        },
    );
    let mut t = task("t");
    t.expected_duration_ms = Some(60_000);
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    let a = sim.assigned("j", "t").unwrap();
    assert_eq!(&*a.worker, "fast");
    assert_eq!(a.explanation.predicted_ms, 30_000);
    assert_eq!(
        a.explanation.runner_up.as_ref().unwrap().lost_on,
        Term::LatencyPrediction
    );
    // Spreading: the next equal task avoids the worker that now has a queue.
    let mut sim = Sim::new();
    sim.worker("w1", caps(8000, 8192));
    sim.worker("w2", caps(8000, 8192));
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("a"))
            .task(task("b"))
            .build(),
    );
    assert_ne!(
        sim.assigned("j", "a").unwrap().worker,
        sim.assigned("j", "b").unwrap().worker
    );
}

#[test]
fn no_worker_runs_over_its_capacity() {
    let mut sim = Sim::new();
    sim.worker("w", caps(2000, 2048));
    let spec = (0..5)
        .fold(JobBuilder::new("acme"), |b, i| {
            b.task(task(&format!("t{i}")))
        })
        .build();
    sim.submit("j", spec);
    assert_eq!(
        sim.assignments().len(),
        2,
        "two 1000m tasks fill a 2000m worker"
    );
    let waiting = sim.task("j", "t4");
    assert_eq!(
        waiting.pending_reason.as_deref(),
        Some("all 1 eligible workers are busy: none has 1000m cpu, 512Mi memory and 0 GPUs free")
    );
    sim.succeed("j", "t0");
    assert_eq!(sim.assignments().len(), 3);
}

#[test]
fn a_pending_task_says_which_constraint_no_worker_meets() {
    let mut sim = Sim::new();
    sim.submit("none", JobBuilder::new("acme").task(task("t")).build());
    assert_eq!(
        sim.task("none", "t").pending_reason.as_deref(),
        Some("no workers are registered")
    );
    sim.worker(
        "w",
        Capabilities {
            models: vec!["llama".into()],
            classifications: vec!["public".into()],
            ..caps(4000, 4096)
        },
    );
    let cases: Vec<(TaskSpec, &str)> = vec![
        (inference("t", "M0007"), "no worker serves model M0007"),
        (
            TaskSpec {
                tools: vec!["ffmpeg".into()],
                ..task("t")
            },
            "no worker offers the tools [ffmpeg]",
        ),
        (
            TaskSpec {
                resources: Resources {
                    gpus: 2,
                    ..Resources::default()
                },
                ..task("t")
            },
            "no worker has 2 GPUs",
        ),
        (
            TaskSpec {
                resources: Resources {
                    cpu_millis: 64_000,
                    memory_mib: 100,
                    gpus: 0,
                },
                ..task("t")
            },
            "no worker is large enough for 64000m cpu and 100Mi memory",
        ),
        (
            TaskSpec {
                classification: Some("secret".into()),
                ..task("t")
            },
            "no worker is cleared for secret data",
        ),
    ];
    for (i, (t, reason)) in cases.into_iter().enumerate() {
        let key = format!("j{i}");
        sim.submit(&key, JobBuilder::new("acme").task(t).build());
        assert_eq!(sim.task(&key, "t").pending_reason.as_deref(), Some(reason));
    }
    assert!(sim.effects.iter().any(
        |e| matches!(e, Effect::Pending { reason, .. } if reason == "no worker serves model M0007")
    ));
}

#[test]
fn higher_priority_runs_first_then_older_jobs() {
    let mut sim = Sim::new();
    sim.submit(
        "old-low",
        JobBuilder::new("acme").chain(1).priority(0).build(),
    );
    sim.now += 1;
    sim.submit(
        "new-low",
        JobBuilder::new("acme").chain(1).priority(0).build(),
    );
    sim.submit(
        "high",
        JobBuilder::new("acme").chain(1).priority(10).build(),
    );
    sim.worker("w", caps(1000, 1024));
    let order = |sim: &Sim| {
        sim.assignments()
            .iter()
            .map(|a| a.job.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&sim), ["high"]);
    sim.succeed("high", "s1");
    sim.succeed("old-low", "s1");
    assert_eq!(order(&sim), ["high", "old-low", "new-low"]);
}

#[test]
fn waiting_work_ages_so_low_priority_never_starves() {
    let settings = Settings {
        aging_interval_ms: 60_000,
        stale_after_ms: 120_000,
        lost_after_ms: 300_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Strategy::Splai);
    sim.worker("w", caps(1000, 1024));
    sim.submit(
        "hog-0",
        JobBuilder::new("acme").chain(1).priority(3).build(),
    );
    sim.submit("low", JobBuilder::new("acme").chain(1).priority(0).build());
    // A stream of priority-3 work arrives; after 4 minutes the low job has aged past it.
    let mut i = 0;
    while sim.assigned("low", "s1").is_none() {
        i += 1;
        assert!(i < 20, "the low-priority job starved");
        sim.now += 60_000;
        sim.heartbeat("w", &[]);
        sim.submit(
            &format!("hog-{i}"),
            JobBuilder::new("acme").chain(1).priority(3).build(),
        );
        let running = sim.assignments().last().unwrap().job.to_string();
        sim.succeed(&running, "s1");
    }
    // Aging counts from the job's due time, submission plus its 10 s critical path: the 3-level
    // gap has closed 3 intervals after that, at 190 s, so the 4th minute's pass runs the job.
    assert_eq!(
        i, 4,
        "one level per interval past the due time: a 3-level gap closes after 3 intervals"
    );
}

#[test]
fn an_older_job_due_later_does_not_overtake_a_job_due_earlier_by_aging() {
    let settings = Settings {
        stale_after_ms: 10_000_000,
        lost_after_ms: 20_000_000,
        assignment_grace_ms: 10_000_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Strategy::Splai);
    sim.worker("w", caps(1000, 1024));
    sim.submit(
        "blocker",
        JobBuilder::new("acme")
            .task(lasting(task("b"), 700_000))
            .build(),
    );
    // Due at 600 s, submitted first.
    sim.submit(
        "long",
        JobBuilder::new("acme")
            .task(lasting(task("l"), 600_000))
            .build(),
    );
    sim.now += 400_000;
    // Due at 410 s: earlier than the long job, though it has waited less. Another shape, so
    // the two are ordered between buckets, where aging applies, not inside one.
    let mut s = lasting(task("s"), 10_000);
    s.resources.memory_mib = 1000;
    sim.submit("short", JobBuilder::new("acme").task(s).build());
    sim.now += 300_000;
    sim.succeed("blocker", "b");
    // Counting from submission the long job would have aged two levels (700 s) against the
    // short one's one (300 s) and run first.
    assert_eq!(&*sim.assignments()[1].job, "short");
}

#[test]
fn while_a_large_task_waits_a_small_one_fills_the_fullest_worker_rather_than_spread() {
    for strategy in [Strategy::Splai, Strategy::LeastLoaded] {
        let mut sim = Sim::with(Settings::default(), strategy);
        // w1 runs three 2000m tasks, w2 one: w1 is the fuller and the busier.
        sim.worker("w1", caps(8000, 32768));
        let three = (0..3).fold(JobBuilder::new("acme"), |b, i| {
            b.task(sized(&format!("t{i}"), 2000))
        });
        sim.submit("three", three.build());
        sim.worker("w2", caps(8000, 32768));
        sim.submit(
            "one",
            JobBuilder::new("acme").task(sized("t", 2000)).build(),
        );
        assert_eq!(&*sim.assigned("one", "t").unwrap().worker, "w2");
        // A task that needs a whole worker waits.
        sim.submit(
            "whole",
            JobBuilder::new("acme").task(sized("t", 8000)).build(),
        );
        assert!(sim.assigned("whole", "t").is_none());
        sim.submit(
            "small",
            JobBuilder::new("acme").task(sized("t", 2000)).build(),
        );
        let a = sim.assigned("small", "t").unwrap().clone();
        sim.succeed("one", "t");
        let started = sim.assigned("whole", "t").is_some();
        if strategy == Strategy::Splai {
            assert_eq!(&*a.worker, "w1", "packs while a larger task waits");
            assert_eq!(a.explanation.terms.packing, 1.0, "w1 is full with it");
            let r = a.explanation.runner_up.as_ref().unwrap();
            assert_eq!((&*r.worker, r.lost_on), ("w2", Term::Packing));
            assert!(started, "w2 is whole again once its task ends");
        } else {
            assert_eq!(&*a.worker, "w2", "spreads to the shorter queue");
            assert!(!started, "the small task holds 2000m of w2");
        }
    }
}

#[test]
fn with_no_larger_task_waiting_small_tasks_spread() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(8000, 32768));
    sim.worker("w2", caps(8000, 32768));
    sim.submit("a", JobBuilder::new("acme").task(task("t")).build());
    sim.submit("b", JobBuilder::new("acme").task(task("t")).build());
    let (a, b) = (
        sim.assigned("a", "t").unwrap(),
        sim.assigned("b", "t").unwrap(),
    );
    assert_ne!(a.worker, b.worker);
    assert_eq!(b.explanation.terms.packing, 0.0);
}

#[test]
fn tenants_of_equal_priority_share_the_fleet_fairly() {
    let mut sim = Sim::new();
    for w in 0..4 {
        sim.worker(&format!("w{w}"), caps(1000, 1024));
    }
    let many = |t: &str| {
        (0..8)
            .fold(JobBuilder::new(t), |b, i| b.task(task(&format!("t{i}"))))
            .build()
    };
    sim.submit("big", many("alpha"));
    sim.submit("late", many("beta"));
    let running = |sim: &Sim| {
        (
            sim.status("big").progress.running,
            sim.status("late").progress.running,
        )
    };
    // alpha came first and took the whole fleet; freed slots go to the tenant with the smaller share.
    assert_eq!(running(&sim), (4, 0));
    sim.succeed("big", "t0");
    assert_eq!(running(&sim), (3, 1));
    sim.succeed("big", "t1");
    assert_eq!(running(&sim), (2, 2));
    sim.succeed("big", "t2");
    assert_eq!(
        running(&sim),
        (2, 2),
        "alpha had fewer, so it gets its slot back"
    );
    sim.succeed("late", "t0");
    assert_eq!(running(&sim), (2, 2));
}

#[test]
fn each_baseline_places_by_its_own_rule() {
    let fleet = |sim: &mut Sim| {
        sim.worker("w1", caps(4000, 8192));
        sim.worker("w2", caps(4000, 8192));
        sim.worker("w3", caps(4000, 8192));
    };
    let spec = (0..4)
        .fold(JobBuilder::new("acme"), |b, i| {
            b.task(task(&format!("t{i}")))
        })
        .build();
    let run = |strategy: Strategy| {
        let mut sim = Sim::with(Settings::default(), strategy);
        fleet(&mut sim);
        sim.submit("j", spec.clone());
        sim.assignments()
            .iter()
            .map(|a| a.worker.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(Strategy::FirstFit), ["w1", "w1", "w1", "w1"]);
    assert_eq!(run(Strategy::RoundRobin), ["w1", "w2", "w3", "w1"]);
    let least = run(Strategy::LeastLoaded);
    let distinct: std::collections::BTreeSet<_> = least[..3].iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "the least loaded worker is always an idle one: {least:?}"
    );
    assert_eq!(
        least[3], least[0],
        "then the tie-break order repeats: {least:?}"
    );
    let random = run(Strategy::Random);
    assert_eq!(
        random,
        run(Strategy::Random),
        "the seeded baseline repeats itself"
    );
    assert_eq!(random.len(), 4);
}

#[test]
fn exhaustive_and_bounded_candidate_search_agree_on_a_small_fleet() {
    let mut bounded = Sim::new();
    let mut exact = Sim::with(
        Settings {
            candidates_per_class: 0,
            ..Settings::default()
        },
        Strategy::Splai,
    );
    for sim in [&mut bounded, &mut exact] {
        for w in 0..6 {
            sim.worker(
                &format!("w{w}"),
                Capabilities {
                    models: vec!["m".into()],
                    ..caps(4000, 8192)
                },
            );
        }
        sim.heartbeat("w4", &["m"]);
        let spec = (0..10)
            .fold(JobBuilder::new("acme"), |b, i| {
                b.task(inference(&format!("t{i}"), "m"))
            })
            .build();
        sim.submit("j", spec);
    }
    let picks = |s: &Sim| {
        s.assignments()
            .iter()
            .map(|a| a.worker.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(&bounded), picks(&exact));
}

#[test]
fn exhaustive_and_bounded_search_agree_when_packing_trades_fullness_against_queues() {
    // Nine 8000m workers: four running seven 1000m tasks each (full but for 1000m, queue 7),
    // four running one 500m task (nearly idle, queue 1) and x running two 3000m tasks (queue 2).
    // While an 8000m task waits, a 1000m task scores best on x (0.875 full, against 1.0 and
    // 0.19; queue 2, against 7 and 1), which is fifth on both the least-loaded and the
    // tightest-fit lists: four candidates of each would miss it.
    let placed = |candidates: u32| {
        let mut sim = Sim::with(
            Settings {
                candidates_per_class: candidates,
                ..Settings::default()
            },
            Strategy::Splai,
        );
        for (i, name) in ["b1", "b2", "b3", "b4"].iter().enumerate() {
            sim.worker(name, caps(8000, 65536));
            let seven = (0..7).fold(JobBuilder::new("acme"), |b, t| {
                b.task(sized(&format!("t{t}"), 1000))
            });
            sim.submit(&format!("busy{i}"), seven.build());
        }
        sim.worker("x", caps(8000, 65536));
        let six = JobBuilder::new("acme")
            .task(sized("a", 3000))
            .task(sized("b", 3000));
        sim.submit("six", six.build());
        assert_eq!(&*sim.assigned("six", "a").unwrap().worker, "x");
        assert_eq!(&*sim.assigned("six", "b").unwrap().worker, "x");
        for name in ["i1", "i2", "i3", "i4"] {
            sim.worker(name, caps(8000, 65536));
        }
        // Fill the idle workers partly so no single one is whole, then make a whole-worker task
        // wait.
        let mut partly: Vec<String> = (0..4)
            .map(|i| {
                let j = format!("idle{i}");
                sim.submit(&j, JobBuilder::new("acme").task(sized("t", 500)).build());
                sim.assigned(&j, "t").unwrap().worker.to_string()
            })
            .collect();
        partly.sort();
        assert_eq!(
            partly,
            ["i1", "i2", "i3", "i4"],
            "spread over the idle ones"
        );
        sim.submit(
            "whole",
            JobBuilder::new("acme").task(sized("t", 8000)).build(),
        );
        assert!(sim.assigned("whole", "t").is_none());
        sim.submit(
            "small",
            JobBuilder::new("acme").task(sized("t", 1000)).build(),
        );
        let a = sim.assigned("small", "t").unwrap();
        (a.worker.to_string(), a.explanation.terms.packing > 0.0)
    };
    let exact = placed(0);
    assert_eq!(exact, ("x".to_string(), true));
    assert_eq!(placed(4), exact, "the bounded search finds x too");
}

#[test]
fn removing_a_worker_requeues_its_tasks() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1024));
    let mut t = task("t");
    t.retry.limit = 1;
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    sim.send(Event::WorkerRemoved { name: "w1".into() });
    assert_eq!(
        sim.task("j", "t").error.as_deref(),
        Some("worker w1 was removed")
    );
    assert!(sim.s.worker_names().is_empty());
}

/// A worker with one GPU that serves any model.
fn one_gpu(cpu: u32) -> Capabilities {
    Capabilities {
        gpus: 1,
        models: vec!["*".into()],
        ..caps(cpu, 8192)
    }
}

/// The core with model loads of 30 s.
fn with_model_loads() -> Sim {
    let settings = Settings {
        model_load_ms: 30_000,
        ..Settings::default()
    };
    Sim::with(settings, Strategy::Splai)
}

fn two_model_workers() -> Sim {
    let mut sim = with_model_loads();
    sim.worker("warm", one_gpu(8000));
    sim.worker("cold", one_gpu(8000));
    sim.heartbeat("warm", &["llama"]);
    sim
}

fn gpu_inference(id: &str, ms: u64) -> TaskSpec {
    let mut t = inference(id, "llama");
    t.resources.gpus = 1;
    t.expected_duration_ms = Some(ms);
    t
}

#[test]
fn a_task_waits_for_a_busy_warm_worker_that_frees_up_within_half_a_model_load() {
    let mut sim = two_model_workers();
    sim.submit(
        "first",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    assert_eq!(&*sim.assigned("first", "t").unwrap().worker, "warm");
    sim.now += 2_000;
    sim.submit(
        "second",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    assert!(
        sim.assigned("second", "t").is_none(),
        "it waits rather than loading llama cold"
    );
    let reason = sim.task("second", "t").pending_reason.unwrap();
    assert!(
        reason.starts_with("waiting about 8.0s for warm, which has model llama warm"),
        "{reason}"
    );
    sim.succeed("first", "t");
    let a = sim.assigned("second", "t").unwrap();
    assert_eq!((&*a.worker, a.explanation.cold_start), ("warm", false));
}

#[test]
fn a_task_does_not_wait_for_a_warm_worker_whose_first_ending_attempt_frees_too_little() {
    let mut sim = with_model_loads();
    sim.worker("warm", one_gpu(4000));
    sim.heartbeat("warm", &["llama"]);
    // Batch work holds most of the warm worker's cores for ten minutes; a request holds its GPU
    // for five seconds.
    let mut batch = lasting(task("b"), 600_000);
    batch.resources.cpu_millis = 3000;
    sim.submit("batch", JobBuilder::new("acme").task(batch).build());
    let mut short = gpu_inference("t", 5_000);
    short.resources.cpu_millis = 1000;
    sim.submit("short", JobBuilder::new("acme").task(short).build());
    assert_eq!(&*sim.assigned("short", "t").unwrap().worker, "warm");
    sim.worker("cold", one_gpu(4000));
    // The next request needs 2000m: when the short request ends, the warm worker has 1000m.
    let mut next = gpu_inference("t", 5_000);
    next.resources.cpu_millis = 2000;
    sim.submit("next", JobBuilder::new("acme").task(next).build());
    let a = sim
        .assigned("next", "t")
        .expect("loads cold at once instead of waiting ten minutes");
    assert_eq!((&*a.worker, a.explanation.cold_start), ("cold", true));
}

#[test]
fn a_task_loads_its_model_cold_when_the_warm_worker_is_busy_for_longer_than_a_load() {
    let mut sim = two_model_workers();
    sim.submit(
        "long",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 600_000))
            .build(),
    );
    sim.submit(
        "next",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    let a = sim.assigned("next", "t").unwrap();
    assert_eq!((&*a.worker, a.explanation.cold_start), ("cold", true));
}

#[test]
fn a_task_stops_waiting_for_a_warm_worker_after_one_model_load_time() {
    let mut sim = two_model_workers();
    // The warm worker's task is expected to end in 12 s, within half a 30 s load, but overruns.
    sim.submit(
        "slow",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 12_000))
            .build(),
    );
    sim.submit(
        "next",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    assert!(sim.assigned("next", "t").is_none());
    for _ in 0..3 {
        sim.advance(9_999);
        sim.heartbeat("cold", &[]);
        sim.heartbeat("warm", &["llama"]);
    }
    sim.advance(2);
    assert!(
        sim.assigned("next", "t").is_none(),
        "29.999 s: still waiting"
    );
    sim.advance(1);
    assert_eq!(
        &*sim.assigned("next", "t").unwrap().worker,
        "cold",
        "gave up after 30 s, one model load"
    );
}

#[test]
fn time_queued_behind_other_work_does_not_use_up_a_tasks_wait_for_a_warm_worker() {
    let mut sim = two_model_workers();
    // Both workers are busy for a long time: the warm one with llama, the cold one with another model.
    sim.submit(
        "a",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 100_000))
            .build(),
    );
    let mut other = gpu_inference("t", 95_000);
    other.model = Some("mistral".into());
    sim.submit("b", JobBuilder::new("acme").task(other).build());
    assert_eq!(&*sim.assigned("a", "t").unwrap().worker, "warm");
    assert_eq!(&*sim.assigned("b", "t").unwrap().worker, "cold");
    sim.submit(
        "late",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    for _ in 0..19 {
        sim.advance(5_000);
        sim.heartbeat("warm", &["llama"]);
        sim.heartbeat("cold", &["mistral"]);
    }
    // At 95 s the cold worker frees up; the warm one is due at 100 s, sooner than a 30 s load.
    sim.succeed("b", "t");
    assert!(
        sim.assigned("late", "t").is_none(),
        "95 s in the queue is no reason to load llama cold"
    );
    sim.now += 5_000;
    sim.succeed("a", "t");
    let a = sim.assigned("late", "t").unwrap();
    assert_eq!((&*a.worker, a.explanation.cold_start), ("warm", false));
}

#[test]
fn a_cold_load_goes_where_it_evicts_no_model_that_tasks_are_waiting_for() {
    let mut sim = with_model_loads();
    sim.worker("keeps-a", one_gpu(8000));
    sim.worker("keeps-b", one_gpu(8000));
    // Each worker's cache holds one model, as its heartbeats show.
    sim.heartbeat("keeps-a", &["model-a"]);
    sim.heartbeat("keeps-b", &["model-b"]);
    // Three tasks wait for model-a (they need two GPUs, which no worker has).
    let mut big = inference("big", "model-a");
    big.resources.gpus = 2;
    let spec = (0..3)
        .fold(JobBuilder::new("acme"), |b, i| {
            b.task(TaskSpec {
                id: format!("big{i}"),
                ..big.clone()
            })
        })
        .build();
    sim.submit("waiting", spec);
    let mut c = inference("c", "model-c");
    c.resources.gpus = 1;
    sim.submit("new", JobBuilder::new("acme").task(c).build());
    let a = sim.assigned("new", "c").unwrap();
    assert_eq!(
        &*a.worker, "keeps-b",
        "evicting model-b hurts nobody; evicting model-a hurts three tasks"
    );
    let r = a.explanation.runner_up.as_ref().unwrap();
    assert_eq!((&*r.worker, r.lost_on), ("keeps-a", Term::ModelWarmCache));
    assert!(a.explanation.terms.model_warm_cache > r.terms.model_warm_cache);
}

/// A plain task asking for `cpu` millicores.
fn sized(id: &str, cpu: u32) -> TaskSpec {
    let mut t = task(id);
    t.resources.cpu_millis = cpu;
    t
}

fn lasting(mut t: TaskSpec, ms: u64) -> TaskSpec {
    t.expected_duration_ms = Some(ms);
    t
}

/// One worker that runs one task at a time, a long job of two ten-minute tasks, then a short
/// job of one ten-second task; returns the order the tasks ran in.
fn long_then_short(strategy: Strategy, queue_order: QueueOrder) -> Vec<String> {
    let settings = Settings {
        queue_order,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, strategy);
    sim.worker("w", caps(1000, 1024));
    sim.submit(
        "long",
        JobBuilder::new("acme")
            .task(lasting(task("a"), 600_000))
            .task(lasting(task("b"), 600_000))
            .build(),
    );
    sim.now += 1_000;
    sim.submit(
        "short",
        JobBuilder::new("acme")
            .task(lasting(task("s"), 10_000))
            .build(),
    );
    let first = sim.assignments()[0];
    let (job, t) = (first.job.to_string(), first.task.to_string());
    sim.succeed(&job, &t);
    let second = sim.assignments()[1];
    let (job, t) = (second.job.to_string(), second.task.to_string());
    sim.succeed(&job, &t);
    sim.assignments()
        .iter()
        .map(|a| format!("{}/{}", a.job, a.task))
        .collect()
}

#[test]
fn a_short_job_runs_before_the_waiting_tasks_of_a_long_job_under_critical_path_order() {
    assert_eq!(
        long_then_short(Strategy::Splai, QueueOrder::CriticalPath),
        ["long/a", "short/s", "long/b"]
    );
}

#[test]
fn arrival_order_and_the_baselines_serve_jobs_first_come_first_served() {
    let fifo = ["long/a", "long/b", "short/s"];
    assert_eq!(long_then_short(Strategy::Splai, QueueOrder::Arrival), fifo);
    assert_eq!(
        long_then_short(Strategy::LeastLoaded, QueueOrder::CriticalPath),
        fifo
    );
}

#[test]
fn inside_a_job_the_task_on_the_critical_path_runs_first() {
    let job = || {
        JobBuilder::new("acme")
            .task(lasting(task("quick"), 10_000))
            .task(lasting(task("slow"), 600_000))
            .build()
    };
    for (order, first) in [
        (QueueOrder::CriticalPath, "slow"),
        (QueueOrder::Arrival, "quick"),
    ] {
        let settings = Settings {
            queue_order: order,
            ..Settings::default()
        };
        let mut sim = Sim::with(settings, Strategy::Splai);
        sim.worker("w", caps(1000, 1024));
        sim.submit("j", job());
        assert_eq!(&*sim.assignments()[0].task, first, "{order:?}");
    }
}

#[test]
fn inside_a_job_the_critical_task_runs_first_even_when_its_shape_differs() {
    let mut quick = lasting(task("quick"), 10_000);
    quick.resources.cpu_millis = 1000;
    let mut slow = lasting(task("slow"), 600_000);
    slow.resources.cpu_millis = 2000;
    let mut sim = Sim::new();
    sim.worker("w", caps(2000, 4096));
    // `quick` is listed first, so its bucket is the older one.
    sim.submit("j", JobBuilder::new("acme").task(quick).task(slow).build());
    let order: Vec<String> = sim
        .assignments()
        .iter()
        .map(|a| a.task.to_string())
        .collect();
    assert_eq!(order, ["slow"], "the task with no slack takes the worker");
}

#[test]
fn a_model_holding_its_share_of_warm_workers_waits_for_them_rather_than_load_cold() {
    let mut sim = two_model_workers();
    sim.worker("warm-2", one_gpu(8000));
    sim.heartbeat("warm-2", &["llama"]);
    for j in ["a", "b"] {
        sim.submit(
            j,
            JobBuilder::new("acme")
                .task(gpu_inference("t", 600_000))
                .build(),
        );
        assert!(sim.assigned(j, "t").unwrap().worker.starts_with("warm"));
    }
    // Three queued qwen tasks no worker can run yet: llama has two of the three warm slots for
    // half of the work.
    for j in ["q1", "q2", "q3"] {
        let mut t = inference("t", "qwen");
        t.resources.gpus = 2;
        sim.submit(j, JobBuilder::new("acme").task(t).build());
    }
    sim.submit(
        "c",
        JobBuilder::new("acme")
            .task(gpu_inference("t", 10_000))
            .build(),
    );
    assert!(
        sim.assigned("c", "t").is_none(),
        "it does not load llama on `cold`"
    );
    let reason = sim.task("c", "t").pending_reason.unwrap();
    assert!(
        reason.starts_with("waiting for a worker with model llama warm")
            && reason.contains("66.7% of the warm slots for 50.0% of the work"),
        "{reason}"
    );
    sim.succeed("a", "t");
    let a = sim.assigned("c", "t").unwrap();
    assert_eq!((&*a.worker, a.explanation.cold_start), ("warm", false));
}
