//! The scenario's fault timeline, applied between turmoil ticks: network faults through turmoil's
//! link controls, agent faults through each agent's handle, worker faults through the shared
//! worker model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::AgentHandle;

use super::CONTROL_PLANE;
use super::executor::{World, lock};
use super::hosts::Host;
use crate::scenario::{FaultKind, Scenario};
use crate::worker::{self, SimWorker};

/// The scenario's fault starts and ends, `(at_ms, fault, on)`, in the order the
/// discrete-event engine queues them.
pub(super) fn timeline(sc: &Scenario) -> Vec<(u64, usize, bool)> {
    let mut out = Vec::new();
    for (i, f) in sc.faults.iter().enumerate() {
        out.push((f.at_ms, i, true));
        if let Some(d) = f.duration_ms {
            out.push((f.at_ms + d, i, false));
        }
    }
    // Stable: faults due together keep their queueing order.
    out.sort_by_key(|f| f.0);
    out
}

/// Applies faults between ticks.
pub(super) struct Faults<'a> {
    sc: &'a Scenario,
    by_name: &'a BTreeMap<String, usize>,
    hosts: &'a [Host],
    /// Each worker's host.
    host_of: Vec<usize>,
    handles: &'a [AgentHandle],
    workers: &'a [Arc<Mutex<SimWorker>>],
    world: &'a World,
    horizon_ms: u64,
    /// Active partition faults per host.
    partitioned: Vec<u32>,
    /// Until when each agent's heartbeats are paused, and each crashed agent is down.
    paused_until: Vec<u64>,
    down_until: Vec<u64>,
}

impl<'a> Faults<'a> {
    pub fn new(
        sc: &'a Scenario,
        by_name: &'a BTreeMap<String, usize>,
        hosts: &'a [Host],
        handles: &'a [AgentHandle],
        workers: &'a [Arc<Mutex<SimWorker>>],
        world: &'a World,
        horizon_ms: u64,
    ) -> Self {
        let mut host_of = vec![0; workers.len()];
        for (h, host) in hosts.iter().enumerate() {
            for &w in &host.workers {
                host_of[w] = h;
            }
        }
        Faults {
            sc,
            by_name,
            hosts,
            host_of,
            handles,
            workers,
            world,
            horizon_ms,
            partitioned: vec![0; hosts.len()],
            paused_until: vec![0; handles.len()],
            down_until: vec![0; handles.len()],
        }
    }

    pub fn apply(&mut self, sim: &mut ::turmoil::Sim<'_>, i: usize, on: bool, now: u64) {
        let f = &self.sc.faults[i];
        // A fault without a duration lasts past the end of the run.
        let until = f
            .duration_ms
            .map_or(self.horizon_ms + 1, |d| f.at_ms + d)
            .max(now);
        let targets = |t| worker::targets(self.sc, self.by_name, t);
        match &f.kind {
            FaultKind::HeartbeatLoss { target } => {
                for w in targets(target) {
                    if on && until > self.paused_until[w] {
                        self.paused_until[w] = until;
                        // Fails only if the agent has stopped, and agents never stop here.
                        let _ = self.handles[w].pause_heartbeats(ms(until - now));
                    }
                }
            }
            FaultKind::Crash { target } => {
                for w in targets(target) {
                    if on && self.down_until[w] <= now {
                        self.down_until[w] = until;
                        lock(&self.workers[w]).crash();
                        let _ = self.handles[w].crash(ms(until - now));
                    }
                }
            }
            FaultKind::Partition { target } => {
                let hosts: BTreeSet<usize> = targets(target)
                    .into_iter()
                    .map(|w| self.host_of[w])
                    .collect();
                for h in hosts {
                    let count = &mut self.partitioned[h];
                    let name = self.hosts[h].name.as_str();
                    if on {
                        *count += 1;
                        if *count == 1 {
                            sim.partition(name, CONTROL_PLANE);
                        }
                    } else if *count > 0 {
                        *count -= 1;
                        if *count == 0 {
                            sim.repair(name, CONTROL_PLANE);
                        }
                    }
                }
            }
            FaultKind::Network {
                extra_latency_ms,
                loss_rate,
            } => {
                let (extra, loss) = if on {
                    (*extra_latency_ms, *loss_rate)
                } else {
                    (0, 0.0)
                };
                let latency = ms(self.sc.network_latency_ms + extra);
                for host in self.hosts {
                    sim.set_link_latency(host.name.as_str(), CONTROL_PLANE, latency);
                    sim.set_link_fail_rate(host.name.as_str(), CONTROL_PLANE, loss);
                }
            }
            FaultKind::Slow { target, factor } => {
                for w in targets(target) {
                    lock(&self.workers[w]).slow = if on { *factor } else { 1.0 };
                }
            }
            FaultKind::TaskFailures {
                task_kind,
                probability,
            } => lock(&self.world.failures).set(*task_kind, *probability, on),
        }
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
