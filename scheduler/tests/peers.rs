//! The peer policies' decisions that need the whole core: Kueue's admission, Volcano's gang
//! and the deadline order, each against what another policy does with the same input.

mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::{Event, Settings, Strategy};

fn sized(id: &str, cpu: u32) -> TaskSpec {
    TaskSpec {
        resources: Resources {
            cpu_millis: cpu,
            memory_mib: 1024,
            gpus: 0,
        },
        ..task(id)
    }
}

fn wide(tenant: &str, n: usize, cpu: u32) -> JobSpec {
    (0..n)
        .fold(JobBuilder::new(tenant), |b, i| {
            b.task(sized(&format!("t{i}"), cpu))
        })
        .build()
}

fn assigned_of(sim: &Sim, job: &str) -> usize {
    sim.assignments().iter().filter(|a| &*a.job == job).count()
}

fn with_tasks_quota(strategy: Strategy, max: u32) -> Sim {
    let mut sim = Sim::with(Settings::default(), strategy);
    sim.send(Event::PolicyUpserted {
        name: "q".into(),
        spec: PolicySpec {
            tenant: "acme".into(),
            quotas: Quotas {
                max_running_tasks: Some(max),
                ..Quotas::default()
            },
            ..PolicySpec::default()
        },
    });
    sim.worker("w", caps(64_000, 65_536));
    sim
}

#[test]
fn kueue_admits_a_job_only_when_its_whole_request_fits_next_to_the_admitted_ones() {
    let mut sim = with_tasks_quota(Strategy::Kueue, 6);
    sim.submit("j", wide("acme", 4, 1000));
    sim.submit("k", wide("acme", 4, 1000));
    assert_eq!(assigned_of(&sim, "j"), 4);
    assert_eq!(assigned_of(&sim, "k"), 0);
    assert_eq!(sim.phase("k"), JobPhase::Queued);
    for t in ["t0", "t1", "t2", "t3"] {
        sim.succeed("j", t);
    }
    assert_eq!(assigned_of(&sim, "k"), 4);

    // Without Kueue, the core's per-task quota starts two of k's tasks next to j's four.
    let mut kube = with_tasks_quota(Strategy::KubeScheduler, 6);
    kube.submit("j", wide("acme", 4, 1000));
    kube.submit("k", wide("acme", 4, 1000));
    assert_eq!(assigned_of(&kube, "k"), 2);
}

#[test]
fn volcano_starts_none_of_a_jobs_ready_tasks_until_all_of_them_fit() {
    for (strategy, started) in [(Strategy::Volcano, 0), (Strategy::KubeScheduler, 3)] {
        let mut sim = Sim::with(Settings::default(), strategy);
        sim.worker("w", caps(4000, 65_536));
        sim.submit("busy", wide("acme", 1, 1000));
        sim.submit("j", wide("acme", 4, 1000));
        assert_eq!(assigned_of(&sim, "j"), started, "{}", strategy.name());
        if strategy == Strategy::Volcano {
            let reason = sim.task("j", "t0").pending_reason.unwrap_or_default();
            assert!(reason.contains("volcano gang"), "{reason}");
            sim.succeed("busy", "t0");
            assert_eq!(assigned_of(&sim, "j"), 4);
        }
    }
}

#[test]
fn edf_runs_the_job_with_the_earlier_deadline_first_where_kube_scheduler_keeps_arrival_order() {
    for (strategy, first) in [(Strategy::Edf, "late"), (Strategy::KubeScheduler, "early")] {
        let mut sim = Sim::with(Settings::default(), strategy);
        sim.worker("w", caps(1000, 65_536));
        sim.submit("busy", wide("acme", 1, 1000));
        let mut early = wide("acme", 1, 1000);
        early.deadline_seconds = Some(600);
        sim.submit("early", early);
        sim.advance(1000);
        let mut late = wide("acme", 1, 1000);
        late.deadline_seconds = Some(60);
        sim.submit("late", late);
        sim.succeed("busy", "t0");
        assert_eq!(assigned_of(&sim, first), 1, "{}", strategy.name());
    }
}
