//! The scenario's fault timeline, applied between turmoil ticks: network faults through turmoil's
//! link controls, agent faults through each agent's handle, worker faults through the shared
//! worker model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::AgentHandle;

use super::CONTROL_PLANE;
use super::hosts::Host;
use crate::executor::{AgentFaults, World};
use crate::scenario::{FaultKind, Scenario};
use crate::worker::{self, SimWorker};

/// Applies faults between ticks: link faults here, the others through [`AgentFaults`].
pub(super) struct Faults<'a> {
    sc: &'a Scenario,
    by_name: &'a BTreeMap<String, usize>,
    hosts: &'a [Host],
    /// Each worker's host.
    host_of: Vec<usize>,
    agents: AgentFaults<'a>,
    /// Active partition faults per host.
    partitioned: Vec<u32>,
}

impl<'a> Faults<'a> {
    pub fn new(
        sc: &'a Scenario,
        by_name: &'a BTreeMap<String, usize>,
        hosts: &'a [Host],
        handles: &'a [AgentHandle],
        workers: &'a [Arc<Mutex<SimWorker>>],
        world: &'a World,
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
            agents: AgentFaults::new(sc, by_name, handles, workers, world),
            partitioned: vec![0; hosts.len()],
        }
    }

    pub fn apply(&mut self, sim: &mut ::turmoil::Sim<'_>, i: usize, on: bool, now: u64) {
        if self.agents.apply(i, on, now) {
            return;
        }
        match &self.sc.faults[i].kind {
            FaultKind::Partition { target } => {
                let hosts: BTreeSet<usize> = worker::targets(self.sc, self.by_name, target)
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
                let latency = Duration::from_millis(self.sc.network_latency_ms + extra);
                for host in self.hosts {
                    sim.set_link_latency(host.name.as_str(), CONTROL_PLANE, latency);
                    sim.set_link_fail_rate(host.name.as_str(), CONTROL_PLANE, loss);
                }
            }
            _ => {}
        }
    }
}
