//! Where the agents run: one turmoil host per worker group, and how each agent is configured.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::{Agent, AgentHandle, TurmoilNet};

use super::{CONTROL_PLANE, PORT};
use crate::executor::{SimExecutor, World, agent_config, lock};
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
            let config = agent_config(sc, &name, caps, interval, format!("{CONTROL_PLANE}:{PORT}"));
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
