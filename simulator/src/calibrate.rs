//! Fitting the control plane's delays from real runs: what `splai-sim calibrate` does.
//!
//! A real run (`splai-fidelity --out DIR` writes one in `DIR/real`) leaves `tasks.csv`, one row
//! per attempt, and `admissions.csv`, one row per job. Two delays of the real control plane
//! show in them, and each is a scenario setting of the simulator:
//! - `networkLatencyMs`, the one-way delay between an agent and the control plane: an attempt's
//!   start is recorded when the agent's answer to its assignment comes back, so the time from
//!   assignment to start is a round trip, which the simulator models as twice this setting;
//! - `submitLatencyMs`, the time from a job's creation to the control plane taking it in (the
//!   API server's write and the watch event that brings the job to the operator).
//!
//! Each is fitted as the mean of what was measured, rounded to the millisecond: the simulator
//! holds each delay constant, and a constant added to every message or job moves mean times by
//! its mean. The spread is printed beside it, so a user sees how far from constant it was.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// The file of a real run that lists when each job was created and taken in.
pub const ADMISSIONS_CSV: &str = "admissions.csv";

/// One job of a real run: when its create was sent, and when the control plane took it in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    pub job: String,
    /// Milliseconds since the start of the run.
    pub created_ms: u64,
    /// Milliseconds since the start of the run; empty when the job was never taken in.
    pub admitted_ms: Option<u64>,
}

/// What one real run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurements {
    /// Each attempt's time from assignment to start, in ms.
    pub round_trips_ms: Vec<u64>,
    /// Each job's time from creation to admission, in ms.
    pub admissions_ms: Vec<u64>,
}

impl Measurements {
    /// From each attempt's (assigned, started) times and each job's admission.
    pub fn new(
        attempts: impl IntoIterator<Item = (u64, Option<u64>)>,
        admissions: &[Admission],
    ) -> Measurements {
        Measurements {
            round_trips_ms: attempts
                .into_iter()
                .filter_map(|(assigned, started)| Some(started?.saturating_sub(assigned)))
                .collect(),
            admissions_ms: admissions
                .iter()
                .filter_map(|a| Some(a.admitted_ms?.saturating_sub(a.created_ms)))
                .collect(),
        }
    }
}

/// The control plane's delays, as scenario settings (and as `splai-sim calibrate` prints them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delays {
    pub network_latency_ms: u64,
    pub submit_latency_ms: u64,
}

impl Delays {
    /// The scenario's own delays.
    pub fn of(sc: &Scenario) -> Delays {
        Delays {
            network_latency_ms: sc.network_latency_ms,
            submit_latency_ms: sc.submit_latency_ms,
        }
    }

    /// Gives `sc` these delays.
    pub fn apply(&self, sc: &mut Scenario) {
        sc.network_latency_ms = self.network_latency_ms;
        sc.submit_latency_ms = self.submit_latency_ms;
    }

    /// Reads what `splai-sim calibrate` printed (YAML, or JSON with `--json`).
    pub fn load(path: &Path) -> Result<Delays, CalibrateError> {
        let text = std::fs::read_to_string(path).map_err(|e| CalibrateError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        serde_yaml_ng::from_str(&text).map_err(|e| CalibrateError::Parse {
            path: path.to_owned(),
            reason: format!(
                "{e}; expected `networkLatencyMs` and `submitLatencyMs`, as `splai-sim calibrate` prints them"
            ),
        })
    }
}

/// How a measured delay is spread.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub mean_ms: f64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub max_ms: u64,
}

impl Spread {
    fn of(mut v: Vec<u64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Spread {
            samples: v.len(),
            mean_ms: (v.iter().sum::<u64>() as f64 / v.len() as f64 * 100.0).round() / 100.0,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            max_ms: at(1.0),
        })
    }
}

/// The fitted settings and what they were fitted from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    #[serde(flatten)]
    pub delays: Delays,
    /// Assignment to start, in the real runs.
    pub dispatch_round_trip: Spread,
    /// Creation to admission, in the real runs.
    pub admission: Spread,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: csv::Error },
    #[error("cannot read {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "no attempt in the runs given has a start time: give the `real` folder of a \
         `splai-fidelity --out DIR` run (DIR/real), whose tasks.csv lists the attempts"
    )]
    NoAttempts,
    #[error(
        "no job in the runs given was taken in by the control plane: give the `real` folder of a \
         `splai-fidelity --out DIR` run (DIR/real), whose admissions.csv lists the jobs"
    )]
    NoAdmissions,
}

/// The columns of `tasks.csv` that calibration reads.
#[derive(Deserialize)]
struct AttemptTimes {
    assigned_ms: u64,
    started_ms: Option<u64>,
}

fn rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, CalibrateError> {
    let err = |error| CalibrateError::Read {
        path: path.to_owned(),
        error,
    };
    let mut reader = csv::Reader::from_path(path).map_err(err)?;
    reader
        .deserialize()
        .collect::<Result<Vec<T>, _>>()
        .map_err(err)
}

/// Reads what the real run in `dir` measured (its `tasks.csv` and `admissions.csv`).
pub fn read_run(dir: &Path) -> Result<Measurements, CalibrateError> {
    let attempts: Vec<AttemptTimes> = rows(&dir.join("tasks.csv"))?;
    let admissions: Vec<Admission> = rows(&dir.join(ADMISSIONS_CSV))?;
    Ok(Measurements::new(
        attempts.iter().map(|a| (a.assigned_ms, a.started_ms)),
        &admissions,
    ))
}

/// Fits the settings from the measurements of one or more real runs.
pub fn fit(runs: &[Measurements]) -> Result<Calibration, CalibrateError> {
    let all = |f: fn(&Measurements) -> &Vec<u64>| runs.iter().flat_map(f).copied().collect();
    let trips = Spread::of(all(|m| &m.round_trips_ms)).ok_or(CalibrateError::NoAttempts)?;
    let admission = Spread::of(all(|m| &m.admissions_ms)).ok_or(CalibrateError::NoAdmissions)?;
    Ok(Calibration {
        delays: Delays {
            network_latency_ms: (trips.mean_ms / 2.0).round() as u64,
            submit_latency_ms: admission.mean_ms.round() as u64,
        },
        dispatch_round_trip: trips,
        admission,
    })
}

impl Calibration {
    /// What to print: the spread of each delay, then the settings as scenario YAML.
    pub fn text(&self) -> String {
        let line = |what: &str, s: &Spread| {
            format!(
                "# {what}: {} samples, mean {:.2} ms, p50 {} ms, p90 {} ms, max {} ms\n",
                s.samples, s.mean_ms, s.p50_ms, s.p90_ms, s.max_ms
            )
        };
        format!(
            "{}{}networkLatencyMs: {}\nsubmitLatencyMs: {}\n",
            line(
                "assignment to start (a round trip)",
                &self.dispatch_round_trip
            ),
            line("job creation to admission", &self.admission),
            self.delays.network_latency_ms,
            self.delays.submit_latency_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fitted_latency_is_half_the_mean_round_trip_and_admission_its_mean() {
        let runs = [
            Measurements {
                round_trips_ms: vec![2, 4],
                admissions_ms: vec![10],
            },
            Measurements {
                round_trips_ms: vec![6],
                admissions_ms: vec![20, 31],
            },
        ];
        let c = fit(&runs).unwrap();
        assert_eq!(
            c.delays,
            Delays {
                network_latency_ms: 2,
                submit_latency_ms: 20
            }
        );
        assert_eq!(c.dispatch_round_trip.samples, 3);
        assert_eq!(c.admission.max_ms, 31);
        assert!(
            c.text()
                .ends_with("networkLatencyMs: 2\nsubmitLatencyMs: 20\n")
        );
    }

    #[test]
    fn what_calibrate_prints_loads_back_as_the_same_delays_in_yaml_and_in_json() {
        let c = fit(&[Measurements {
            round_trips_ms: vec![3, 5],
            admissions_ms: vec![7],
        }])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("c.yaml", c.text()),
            ("c.json", serde_json::to_string(&c).unwrap()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            assert_eq!(Delays::load(&path).unwrap(), c.delays, "{name}");
        }
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "networkLatency: 1\n").unwrap();
        let e = Delays::load(&bad).unwrap_err().to_string();
        assert!(e.contains("submitLatencyMs"), "{e}");
    }

    #[test]
    fn runs_without_started_attempts_give_an_error_that_names_the_folder_to_use() {
        let runs = [Measurements {
            round_trips_ms: vec![],
            admissions_ms: vec![3],
        }];
        let e = fit(&runs).unwrap_err();
        assert!(matches!(e, CalibrateError::NoAttempts));
        assert!(e.to_string().contains("DIR/real"));
    }
}
