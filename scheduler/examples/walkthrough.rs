//! A walk through the core, with no cluster: a small fleet, a map-reduce inference job with a
//! flaky step, and a worker that goes silent. Prints every decision the core makes and why.
//!
//! Run: `cargo run -p splai-scheduler --example walkthrough`

use splai_scheduler::api::*;
use splai_scheduler::{Effect, Event, Heartbeat, Scheduler, Settings, Strategy, Timestamp};

/// 2026-01-01T00:00:00Z; times are printed relative to it.
const START: u64 = 1_767_225_600_000;

fn show(now: u64, effects: &[Effect]) {
    for e in effects {
        let t = format!("t={:>5.1}s", (now - START) as f64 / 1000.0);
        match e {
            Effect::JobPhaseChanged {
                job,
                from,
                to,
                message,
                ..
            } => {
                println!(
                    "{t}  job {job}: {from:?} -> {to:?}{}",
                    message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            }
            Effect::Assign(a) => println!(
                "{t}  assign {}/{} attempt {} -> {}\n            {}",
                a.job, a.task, a.attempt, a.worker, a.explanation
            ),
            Effect::Requeue {
                task,
                failed_attempt,
                not_before,
                error,
                ..
            } => {
                println!(
                    "{t}  retry {task}: attempt {failed_attempt} failed ({error}); next not before {not_before}"
                )
            }
            Effect::WorkerHealthChanged { worker, from, to } => {
                println!("{t}  worker {worker}: {from:?} -> {to:?}")
            }
            Effect::Pending { task, reason, .. } => println!("{t}  {task} waits: {reason}"),
            Effect::AttemptEnded(r) => println!(
                "{t}  {}/{} attempt {} on {}: {:?}",
                r.job, r.task, r.attempt, r.worker, r.outcome
            ),
            Effect::Cancel {
                task,
                worker,
                reason,
                ..
            } => println!("{t}  cancel {task} on {worker}: {reason:?}"),
            _ => {}
        }
    }
}

fn main() {
    let settings = Settings {
        stale_after_ms: 5_000,
        lost_after_ms: 15_000,
        ..Settings::default()
    };
    let mut core = Scheduler::new(settings, Strategy::Splai, 42);
    let mut now = START;
    let step = |core: &mut Scheduler, now: u64, e: Event| {
        let out = core.handle(e, Timestamp(now));
        show(now, &out);
        out
    };
    let gpu = |zone: &str| Capabilities {
        cpu_millis: 16_000,
        memory_mib: 65_536,
        gpus: 1,
        models: vec!["llama-8b".into()],
        locality: Some(zone.into()),
        ..Capabilities::default()
    };
    for (name, zone) in [
        ("gpu-a", "zone-a"),
        ("gpu-b", "zone-b"),
        ("gpu-c", "zone-a"),
    ] {
        step(
            &mut core,
            now,
            Event::WorkerRegistered {
                name: name.into(),
                capabilities: gpu(zone),
                incarnation: 1,
            },
        );
    }
    let hb = |w: &str, warm: &[&str]| {
        Event::Heartbeat(Heartbeat {
            worker: w.into(),
            incarnation: 1,
            warm_models: warm.iter().map(|m| m.to_string()).collect(),
            ..Heartbeat::default()
        })
    };
    step(&mut core, now, hb("gpu-b", &["llama-8b"]));

    let template = TaskSpec {
        id: "summarize".into(),
        kind: TaskKind::Inference,
        model: Some("llama-8b".into()),
        resources: Resources {
            cpu_millis: 4000,
            memory_mib: 16_384,
            gpus: 1,
        },
        expected_duration_ms: Some(4_000),
        locality: Some("zone-a".into()),
        ..TaskSpec::default()
    };
    let spec = JobSpec {
        tenant: "acme".into(),
        plan: Some(Box::new(PlanSpec {
            kind: PlanKind::MapReduce,
            count: 3,
            template,
            reduce: None,
        })),
        ..JobSpec::default()
    };
    step(
        &mut core,
        now,
        Event::JobSubmitted {
            key: "docs".into(),
            spec,
            trace_id: None,
        },
    );

    // summarize-1 fails once; gpu-c goes silent while it runs summarize-3.
    let report = |task: &str, attempt: u32| AttemptRef {
        job: "docs".into(),
        task: task.into(),
        attempt,
    };
    now += 4_000;
    for w in ["gpu-a", "gpu-b"] {
        step(&mut core, now, hb(w, &["llama-8b"]));
    }
    let assigned = |core: &Scheduler, task: &str| {
        let st = core.job_status("docs").unwrap();
        let t = st.tasks.into_iter().find(|t| t.id == task).unwrap();
        (t.attempt, t.worker.unwrap_or_default())
    };
    let (a, w) = assigned(&core, "summarize-1");
    step(
        &mut core,
        now,
        Event::TaskFailed {
            attempt: report("summarize-1", a),
            worker: w,
            error: "backend returned 503".into(),
            retryable: true,
        },
    );
    let (a, w) = assigned(&core, "summarize-2");
    step(
        &mut core,
        now,
        Event::TaskSucceeded {
            attempt: report("summarize-2", a),
            worker: w,
            artifact_uri: Some("file:///artifacts/docs/summarize-2/1/out.json".into()),
        },
    );
    while core.job_status("docs").unwrap().phase != JobPhase::Completed && now < START + 120_000 {
        now += 2_500;
        for w in ["gpu-a", "gpu-b"] {
            step(&mut core, now, hb(w, &["llama-8b"]));
        }
        let st = core.job_status("docs").unwrap();
        for t in st
            .tasks
            .iter()
            .filter(|t| t.phase == TaskPhase::Assigned || t.phase == TaskPhase::Running)
        {
            let w = t.worker.clone().unwrap();
            if w == "gpu-c"
                || t.assigned_at
                    .is_some_and(|at| now.saturating_sub(at.millis()) < 4_000)
            {
                continue;
            }
            let uri = format!("file:///artifacts/docs/{}/{}/out.json", t.id, t.attempt);
            step(
                &mut core,
                now,
                Event::TaskSucceeded {
                    attempt: report(&t.id, t.attempt),
                    worker: w,
                    artifact_uri: Some(uri),
                },
            );
        }
    }
    let st = core.job_status("docs").unwrap();
    println!(
        "\njob docs: {:?}, {}/{} tasks succeeded, result {}",
        st.phase,
        st.progress.succeeded,
        st.progress.total,
        st.result_artifact_uri.unwrap_or_default()
    );
}
