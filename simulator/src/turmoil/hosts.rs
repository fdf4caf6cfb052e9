//! Where the agents run: one turmoil host per worker group, and how each agent is configured.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::{Agent, AgentConfig, AgentHandle, Backoff, TurmoilNet};
use splai_scheduler::api::Capabilities;

use super::executor::{SimExecutor, World, lock};
use super::{CONTROL_PLANE, PORT};
use crate::scenario::{FaultKind, Scenario, Target};
use crate::worker::SimWorker;

/// A turmoil host and the workers whose agents it runs.
pub(super) struct Host {
    pub name: String,
    pub workers: Vec<usize>,
}

/// Starts every worker's agent on its host, each at its boot time, and returns their handles in
/// fleet order.
pub(super) fn start_agents(
    sim: &mut ::turmoil::Sim<'_>,
    sc: &Scenario,
    hosts: &[Host],
    workers: &[Arc<Mutex<SimWorker>>],
    world: &Arc<World>,
    boots: &[u64],
    interval: Duration,
) -> Vec<AgentHandle> {
    let mut handles: Vec<Option<AgentHandle>> = vec![None; workers.len()];
    for host in hosts {
        let mut agents = Vec::new();
        for &w in &host.workers {
            let (name, caps) = {
                let worker = lock(&workers[w]);
                (worker.name.clone(), worker.caps.clone())
            };
            let config = agent_config(sc, &name, caps, interval);
            let executor = SimExecutor {
                world: Arc::clone(world),
                worker: Arc::clone(&workers[w]),
            };
            let (agent, handle) = Agent::new(TurmoilNet, config, executor);
            handles[w] = Some(handle);
            agents.push((agent, boots[w]));
        }
        // The software is started once; the engine never crashes or bounces a whole host.
        let agents = RefCell::new(Some(agents));
        sim.host(host.name.as_str(), move || {
            let agents = agents.borrow_mut().take().unwrap_or_default();
            async move {
                for (agent, boot) in agents {
                    tokio::spawn(async move {
                        // Not even a zero sleep: it would end only at the next tick.
                        if boot > 0 {
                            tokio::time::sleep(Duration::from_millis(boot)).await;
                        }
                        agent.run().await;
                    });
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    handles.into_iter().flatten().collect()
}

fn agent_config(
    sc: &Scenario,
    worker: &str,
    caps: Capabilities,
    interval: Duration,
) -> AgentConfig {
    AgentConfig {
        heartbeat_interval: interval,
        // Three missed answers, as the protocol's defaults have it, and never less than a
        // round trip through the worst latency a `network` fault adds.
        dead_after: (interval * 3).max(Duration::from_millis(
            4 * (sc.network_latency_ms + max_extra_latency_ms(sc)) + 1,
        )),
        connect_timeout: interval.max(Duration::from_secs(1)),
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: interval.max(Duration::from_secs(1)) * 2,
        },
        ..AgentConfig::new(worker, format!("{CONTROL_PLANE}:{PORT}"), caps)
    }
}

fn max_extra_latency_ms(sc: &Scenario) -> u64 {
    sc.faults
        .iter()
        .filter_map(|f| match f.kind {
            FaultKind::Network {
                extra_latency_ms, ..
            } => Some(extra_latency_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// One host per worker group, in fleet order, except that a worker a partition fault names
/// alone runs on a host of its own (turmoil partitions whole hosts).
pub(super) fn hosts(
    sc: &Scenario,
    by_name: &BTreeMap<String, usize>,
    names: &[String],
) -> Vec<Host> {
    let alone: BTreeSet<usize> = sc
        .faults
        .iter()
        .filter_map(|f| match &f.kind {
            FaultKind::Partition {
                target: Target {
                    worker: Some(w), ..
                },
            } => by_name.get(w).copied(),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut next = 0;
    for g in &sc.fleet {
        let members: Vec<usize> = (next..next + g.count as usize).collect();
        next += g.count as usize;
        let shared: Vec<usize> = members
            .iter()
            .copied()
            .filter(|w| !alone.contains(w))
            .collect();
        if !shared.is_empty() {
            out.push(Host {
                name: format!("group-{}", g.group),
                workers: shared,
            });
        }
        for w in members.into_iter().filter(|w| alone.contains(w)) {
            out.push(Host {
                name: format!("worker-{}", names[w]),
                workers: vec![w],
            });
        }
    }
    out
}
