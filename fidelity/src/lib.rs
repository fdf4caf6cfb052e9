//! How well `splai-sim` predicts the real operator: a scenario is run for real (`real`) and in
//! the simulator, both at the same time scale, and compared metric by metric (`report`).
//!
//! This is a crate of its own because the simulator must not depend on a cluster or on the
//! operator, while a real run needs both.

#![forbid(unsafe_code)]

pub mod agents;
pub mod real;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use splai_scheduler::Strategy;
use splai_sim::calibrate::{self, Delays, Measurements};
use splai_sim::scale::time_scaled;
use splai_sim::scenario::Scenario;
use splai_sim::summary::{Summary, summarize_jobs};
use splai_sim::{Engine, Run, RunResult};

use crate::real::{RealOptions, RealRun, RealRunError, for_real_time, run_real};
use crate::report::{DelaysUsed, Report, Side, Tolerances, compare};

/// How a fidelity measurement is made.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Every time of the scenario is multiplied by this, in both runs.
    pub time_scale: f64,
    pub tolerances: Tolerances,
    /// The operator's status-write batching interval.
    pub flush_interval: Duration,
    /// Where the real run's operator writes its records.
    pub artifacts: PathBuf,
    /// The control plane's delays the simulated run is given.
    pub delays: DelaySource,
    /// The `splai-fidelity-agent` program, run once per worker.
    pub agent_program: PathBuf,
}

/// Where the simulated run's control-plane delays (`networkLatencyMs`, `submitLatencyMs`) come
/// from. They are real-time constants of the cluster and its network, which a time scale does
/// not shrink: a 130 ms job admission is 2.6 s of a scenario run at 1/20.
#[derive(Clone, Debug, PartialEq)]
pub enum DelaySource {
    /// Fitted from the real run's own records, as `splai-sim calibrate` fits them.
    Measured,
    /// Given, in real ms (`--calibration FILE`).
    Given(Delays),
    /// The time-scaled scenario's own.
    Scenario,
}

/// Both runs of one scenario and how they compare.
pub struct Measured {
    /// The scenario as both ran it: time-scaled, with the real-time floors.
    pub scaled: Scenario,
    pub simulated: RunResult,
    pub real: RealRun,
    pub real_summary: Summary,
    pub report: Report,
}

#[derive(Debug, thiserror::Error)]
pub enum FidelityError {
    #[error("the time scale {0} is outside (0, 1]")]
    TimeScale(f64),
    #[error("the simulated run failed: {0}")]
    Simulation(String),
    #[error(transparent)]
    Real(#[from] RealRunError),
}

/// Runs `sc` in the simulator and for real in namespace `ns`, and compares the two.
pub async fn measure(
    client: Client,
    ns: &str,
    sc: &Scenario,
    opts: &Options,
) -> Result<Measured, FidelityError> {
    let f = opts.time_scale;
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return Err(FidelityError::TimeScale(f));
    }
    real::check_faults(sc)?;
    let scaled = for_real_time(time_scaled(sc, f));
    let real_opts = RealOptions {
        seed: opts.seed,
        flush_interval: opts.flush_interval,
        grace: Duration::from_secs(30),
        artifacts: opts.artifacts.clone(),
        agent_program: opts.agent_program.clone(),
    };
    let real = run_real(client, ns, &scaled, &real_opts).await?;
    let measured = Measurements::new(
        real.rec
            .attempts
            .iter()
            .map(|a| (a.assigned_ms, a.started_ms)),
        &real.admissions,
    );
    let used = match &opts.delays {
        DelaySource::Measured => match calibrate::fit(std::slice::from_ref(&measured)) {
            Ok(c) => DelaysUsed {
                delays: c.delays,
                from: "measured in the real run".into(),
            },
            Err(e) => DelaysUsed {
                delays: Delays::of(&scaled),
                from: format!("the scenario's, as none could be measured ({e})"),
            },
        },
        DelaySource::Given(d) => DelaysUsed {
            delays: *d,
            from: "as given".into(),
        },
        DelaySource::Scenario => DelaysUsed {
            delays: Delays::of(&scaled),
            from: "the time-scaled scenario's".into(),
        },
    };
    let mut predicted = scaled.clone();
    used.delays.apply(&mut predicted);
    let simulated = Run {
        scenario: &predicted,
        seed: opts.seed,
        strategy: Strategy::Splai,
        engine: Engine::Des,
        check_invariants: false,
        explain: None,
    }
    .execute()
    .map_err(|e| FidelityError::Simulation(format!("{e:#}")))?;
    let jobs = real.jobs.iter().map(|(k, s, st)| (k.as_str(), s, st));
    let real_summary = summarize_jobs(
        &scaled,
        opts.seed,
        Strategy::Splai.name(),
        "real",
        &real.rec,
        jobs,
        real.counters,
        real.wall_s,
    );
    let report = compare(
        &Side {
            summary: &simulated.summary,
            rec: &simulated.recorder,
            admission_delay_ms: used.delays.submit_latency_ms as f64,
        },
        &Side {
            summary: &real_summary,
            rec: &real.rec,
            admission_delay_ms: mean(&measured.admissions_ms),
        },
        f,
        opts.tolerances,
        used,
    );
    Ok(Measured {
        scaled,
        simulated,
        real,
        real_summary,
        report,
    })
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}
