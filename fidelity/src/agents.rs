//! The agents of a real run, each a process of its own (`splai-fidelity-agent`), so that a
//! `crash` fault is what it is on a node: the process is killed with SIGKILL, the kernel resets
//! its connection, whatever it held in memory is gone, and when the fault ends a new process
//! registers with the next incarnation.
//!
//! A `freeze` fault is SIGSTOP, then SIGCONT when it ends.
//!
//! Each agent process reads the time-scaled scenario from a file, rebuilds the run's draws from
//! the seed, waits for its boot time and applies the scenario's other faults to itself at their
//! times (`heartbeatLoss`, `slow`, `taskFailures`). It writes each model load it makes (whether
//! the model was warm) to a file of its own as it happens, since a killed process cannot hand
//! over its memory; the run reads them back at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use splai_sim::executor::AttemptKey;
use splai_sim::scenario::{FaultKind, Scenario};
use splai_sim::worker;
use tokio::process::{Child, Command};

use crate::real::RealRunError;

/// What every agent process of a run is told.
#[derive(Clone, Debug)]
pub struct AgentSetup {
    /// The `splai-fidelity-agent` program.
    pub program: PathBuf,
    /// The time-scaled scenario, as JSON.
    pub scenario_file: PathBuf,
    pub seed: u64,
    /// The operator's agent endpoint.
    pub endpoint: String,
    /// What the operator puts before a scenario's job name (`<namespace>/`).
    pub key_prefix: String,
    /// Time 0 of the run, in Unix milliseconds.
    pub epoch_unix_ms: u64,
    /// Where each agent writes its model loads (`cold-<worker>.tsv`).
    pub cold_dir: PathBuf,
}

/// The agent processes of a run, one per worker of the scenario.
pub struct AgentProcesses {
    setup: AgentSetup,
    names: Vec<String>,
    by_name: BTreeMap<String, usize>,
    children: Vec<Option<Child>>,
    incarnations: Vec<u64>,
    /// Until when each crashed agent stays down (ms since the start).
    down_until: Vec<u64>,
    /// How many `freeze` faults hold each agent stopped.
    frozen: Vec<u32>,
}

impl AgentProcesses {
    /// Starts one process per worker; each registers at its boot time (ms since the start).
    pub fn start(
        setup: AgentSetup,
        names: Vec<String>,
        boots: &[u64],
    ) -> Result<AgentProcesses, RealRunError> {
        let by_name = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = names.len();
        let mut me = AgentProcesses {
            setup,
            names,
            by_name,
            children: (0..n).map(|_| None).collect(),
            incarnations: vec![1; n],
            down_until: vec![0; n],
            frozen: vec![0; n],
        };
        for (w, &boot) in boots.iter().enumerate() {
            me.spawn(w, boot, false)?;
        }
        Ok(me)
    }

    fn spawn(&mut self, w: usize, boot_ms: u64, restarted: bool) -> Result<(), RealRunError> {
        let s = &self.setup;
        let mut cmd = Command::new(&s.program);
        cmd.arg("--scenario")
            .arg(&s.scenario_file)
            .arg("--seed")
            .arg(s.seed.to_string())
            .arg("--worker")
            .arg(&self.names[w])
            .arg("--endpoint")
            .arg(&s.endpoint)
            .arg("--key-prefix")
            .arg(&s.key_prefix)
            .arg("--epoch-unix-ms")
            .arg(s.epoch_unix_ms.to_string())
            .arg("--boot-ms")
            .arg(boot_ms.to_string())
            .arg("--incarnation")
            .arg(self.incarnations[w].to_string())
            .arg("--cold-log")
            .arg(cold_log(&s.cold_dir, &self.names[w]))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if restarted {
            cmd.arg("--restarted");
        }
        let child = cmd.spawn().map_err(|error| RealRunError::AgentProcess {
            program: s.program.clone(),
            error,
        })?;
        self.children[w] = Some(child);
        Ok(())
    }

    /// Starts (`on`) or ends the scenario's fault `i` at `now` if it is a crash or a freeze. A
    /// crash kills each target's process (SIGKILL) and starts a new one with the next
    /// incarnation when the fault ends; a freeze stops it (SIGSTOP) until the fault ends
    /// (SIGCONT). Other faults are the agents' own business.
    pub async fn apply(
        &mut self,
        sc: &Scenario,
        i: usize,
        on: bool,
        now: u64,
    ) -> Result<(), RealRunError> {
        let f = &sc.faults[i];
        let target = match &f.kind {
            FaultKind::Freeze { target } => {
                for w in worker::targets(sc, &self.by_name, target) {
                    let was = self.frozen[w];
                    self.frozen[w] = if on { was + 1 } else { was.saturating_sub(1) };
                    match (was, self.frozen[w]) {
                        (0, 1) => self.signal(w, Signal::SIGSTOP),
                        (1, 0) => self.signal(w, Signal::SIGCONT),
                        _ => {}
                    }
                }
                return Ok(());
            }
            FaultKind::Crash { target } => target,
            _ => return Ok(()),
        };
        let until = f.duration_ms.map_or(u64::MAX, |d| f.at_ms + d).max(now);
        for w in worker::targets(sc, &self.by_name, target) {
            if on {
                self.down_until[w] = self.down_until[w].max(until);
                if let Some(mut child) = self.children[w].take() {
                    // SIGKILL, as a node loses a process; the kernel resets its connection.
                    let _ = child.kill().await;
                }
                self.frozen[w] = 0;
            } else if self.children[w].is_none() && now >= self.down_until[w] {
                self.incarnations[w] += 1;
                self.spawn(w, now, true)?;
            }
        }
        Ok(())
    }

    /// Sends `signal` to worker `w`'s agent process, if it runs.
    fn signal(&self, w: usize, signal: Signal) {
        if let Some(pid) = self.children[w].as_ref().and_then(Child::id) {
            // Fails only if the process has just exited, which the run sees in its records.
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Kills every agent process.
    pub async fn stop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill().await;
        }
    }

    /// Every model load the agents made: (attempt, whether the model was cold).
    pub fn cold_loads(&self) -> Vec<(AttemptKey, bool)> {
        let mut out = Vec::new();
        for name in &self.names {
            let Ok(text) = std::fs::read_to_string(cold_log(&self.setup.cold_dir, name)) else {
                continue;
            };
            out.extend(text.lines().filter_map(parse_cold_line));
        }
        out
    }
}

fn cold_log(dir: &Path, worker: &str) -> PathBuf {
    dir.join(format!("cold-{worker}.tsv"))
}

/// One model load as an agent writes it: job, task, attempt and whether it was cold, tab-separated.
pub fn cold_line(key: &AttemptKey, cold: bool) -> String {
    format!("{}\t{}\t{}\t{cold}\n", key.0, key.1, key.2)
}

/// A line that a killed agent left half-written is skipped.
fn parse_cold_line(line: &str) -> Option<(AttemptKey, bool)> {
    let mut parts = line.split('\t');
    let (job, task, attempt, cold) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((
        (job.to_owned(), task.to_owned(), attempt.parse().ok()?),
        cold.parse().ok()?,
    ))
}

/// How long to let the agent processes start before time 0 of the run.
pub fn lead_time(workers: usize) -> Duration {
    Duration::from_millis(1_000 + 50 * workers as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_line_reads_back_and_a_half_written_one_is_skipped() {
        let key = ("req-1".to_owned(), "generate".to_owned(), 2);
        let line = cold_line(&key, true);
        assert_eq!(parse_cold_line(line.trim_end()), Some((key, true)));
        assert_eq!(parse_cold_line("req-1\tgenerate\t2\ttr"), None);
        assert_eq!(parse_cold_line("req-1\tgen"), None);
    }
}
