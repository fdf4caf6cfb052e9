//! How well `splai-sim` predicts the real operator: a scenario is run for real (`real`) and in
//! the simulator, both at the same time scale, and compared metric by metric (`report`).
//!
//! This is a crate of its own because the simulator must not depend on a cluster or on the
//! operator, while a real run needs both.

#![forbid(unsafe_code)]

pub mod real;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use splai_scheduler::Strategy;
use splai_sim::scale::time_scaled;
use splai_sim::scenario::Scenario;
use splai_sim::summary::{Summary, summarize_jobs};
use splai_sim::{Engine, Run, RunResult};

use crate::real::{RealOptions, RealRun, RealRunError, for_real_time, run_real};
use crate::report::{Report, Side, Tolerances, compare};

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
    let simulated = Run {
        scenario: &scaled,
        seed: opts.seed,
        strategy: Strategy::Splai,
        engine: Engine::Des,
        check_invariants: false,
        explain: None,
    }
    .execute()
    .map_err(|e| FidelityError::Simulation(format!("{e:#}")))?;
    let real_opts = RealOptions {
        seed: opts.seed,
        flush_interval: opts.flush_interval,
        grace: Duration::from_secs(30),
        artifacts: opts.artifacts.clone(),
    };
    let real = run_real(client, ns, &scaled, &real_opts).await?;
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
        },
        &Side {
            summary: &real_summary,
            rec: &real.rec,
        },
        f,
        opts.tolerances,
    );
    Ok(Measured {
        scaled,
        simulated,
        real,
        real_summary,
        report,
    })
}
