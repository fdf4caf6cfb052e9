//! The turmoil engine (`--engine turmoil`): the real agent protocol (`splai-protocol`) over
//! turmoil's simulated network. One host is the control plane: the protocol server in front of
//! the core. One host per worker group runs that group's agents as tasks, each with a simulated
//! executor (the same worker model as the discrete-event engine, in `crate::worker`). A partition
//! therefore cuts a whole group off, as it does a rack in a real cluster; a worker that a
//! partition fault names alone gets a host of its own.
//!
//! turmoil steps every host on every 1 ms tick, so a run costs wall time in proportion to the
//! simulated time times the number of hosts, busy or not. It is for checking the protocol and
//! fault handling on small scenarios; `des` is the default engine and the one for trace
//! scenarios and sweeps.
//!
//! One seed drives everything: turmoil's `rng_seed`, the workload, the agents' boot times, and
//! every draw about an attempt (`crate::worker`). Selects in the control plane and the agents
//! poll in a fixed order, and the control plane handles each millisecond only once it is over,
//! in a fixed order, so what reached it in the same millisecond from different hosts cannot be
//! reordered by how turmoil steps them. With the discrete-event engine modelling the same
//! latencies, boots and order, the two make identical decisions on fault-free scenarios (given
//! `networkLatencyMs` of at least 1: hosts step in turn, so a zero-latency hop from an agent
//! lands a tick late).
//!
//! Faults are applied between ticks at their times (`faults.rs`):
//!
//! | fault | turmoil engine |
//! |---|---|
//! | `partition` | `Sim::partition` / `repair` between the target's hosts and the control plane |
//! | `crash` | `AgentHandle::crash(restart_after)` per worker; the worker's warm models are lost |
//! | `heartbeatLoss` | `AgentHandle::pause_heartbeats` per worker |
//! | `network` | `Sim::set_link_latency` (plus the extra latency) and `set_link_fail_rate` on every link to the control plane |
//! | `slow`, `taskFailures` | the executors' shared worker model |

mod control_plane;
mod faults;
mod hosts;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_protocol::ServerConfig;
use splai_scheduler::Scheduler;

use self::control_plane::Plane;
use self::faults::Faults;
use self::hosts::{hosts, start_agents};
use crate::control::Control;
use crate::des::{EPOCH_MS, RunOptions};
use crate::executor::World;
use crate::progress::Progress;
use crate::record::Recorder;
use crate::scenario::Scenario;
use crate::worker::{self, SimWorker};
use crate::workload::arrivals;

const CONTROL_PLANE: &str = "control-plane";
const PORT: u16 = 7070;

/// Simulated milliseconds since the start of the run, on the current host.
fn sim_ms() -> u64 {
    let elapsed = ::turmoil::sim_elapsed().expect("called inside a turmoil host");
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

pub struct TurmoilEngine<'a> {
    sc: &'a Scenario,
    opts: RunOptions,
}

impl<'a> TurmoilEngine<'a> {
    pub fn new(sc: &'a Scenario, opts: RunOptions) -> Self {
        TurmoilEngine { sc, opts }
    }

    /// Runs to the horizon, or until every job has arrived and ended.
    pub fn run(self) -> Result<(Recorder, Scheduler, u64)> {
        let sc = self.sc;
        let seed = self.opts.seed;
        // The same draws, in the same order, as the discrete-event engine.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let arrivals = arrivals(sc, &mut rng);
        let fleet = SimWorker::fleet(sc);
        let boots = worker::boot_times(sc, fleet.len(), &mut rng);
        let by_name = worker::index(&fleet);
        let names: Vec<String> = fleet.iter().map(|w| w.name.clone()).collect();
        let hosts = hosts(sc, &by_name, &names);
        let jobs = arrivals.len();
        let control = Control::new(sc, &self.opts, names, jobs);
        let world = Arc::new(World::new(sc, seed, &arrivals));
        let workers: Vec<Arc<Mutex<SimWorker>>> =
            fleet.into_iter().map(|w| Arc::new(Mutex::new(w))).collect();

        let horizon_ms = sc.horizon_seconds.saturating_mul(1000);
        let latency = Duration::from_millis(sc.network_latency_ms);
        let mut sim = ::turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
            .simulation_duration(Duration::from_millis(horizon_ms.saturating_add(1)))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(latency)
            .max_message_latency(latency)
            // A burst of assignments must not overflow a connection's receive buffer.
            .tcp_capacity(1 << 16)
            .build();

        let control = Rc::new(RefCell::new(control));
        let ended_at = Rc::new(Cell::new(None));
        let interval = Duration::from_millis(sc.heartbeat_interval_ms.max(1));
        let plane = Rc::new(Plane {
            control: Rc::clone(&control),
            arrivals,
            submit_latency_ms: sc.submit_latency_ms,
            world: Arc::clone(&world),
            workers: workers.clone(),
            by_name: by_name.clone(),
            server: ServerConfig {
                // The core decides from heartbeats whether a worker is alive; the server must not
                // hang up on one whose heartbeats a fault holds back, or its reconnect would
                // count as a sign of life.
                idle_timeout: Duration::from_millis(horizon_ms) + Duration::from_secs(3600),
                ..ServerConfig::default()
            },
            port: PORT,
            sample_every_ms: worker::sample_every_ms(sc),
            horizon_ms,
            ended_at: Rc::clone(&ended_at),
        });
        // The control plane is added first, so it is stepped first on every tick.
        sim.host(CONTROL_PLANE, move || Rc::clone(&plane).run());

        let handles = start_agents(&mut sim, sc, &hosts, &workers, &world, &boots, interval);

        let mut faults = Faults::new(sc, &by_name, &hosts, &handles, &workers, &world);
        let timeline = sc.fault_timeline();
        let mut next_fault = 0;
        // Each tick runs the millisecond `now` on the agents' hosts and the one before it on the
        // control plane, which handles a millisecond once it is over.
        let mut now = 0;
        let mut progress = Progress::new(self.opts.progress);
        let end = loop {
            if let Some(end) = ended_at.get() {
                break end;
            }
            if now > horizon_ms + 1 {
                return Err(anyhow!("the control plane did not reach the horizon"));
            }
            while let Some(&(at, i, on)) = timeline.get(next_fault)
                && at <= now
            {
                faults.apply(&mut sim, i, on, now);
                next_fault += 1;
            }
            progress.tick(now, horizon_ms, control.borrow().jobs_ended(), jobs);
            sim.step()
                .map_err(|e| anyhow!("the turmoil simulation failed at {now} ms: {e}"))?;
            now += 1;
        };
        drop(progress);
        // The hosts' software holds the other references to the control state.
        drop(sim);
        let control = Rc::try_unwrap(control)
            .map_err(|_| anyhow!("the control plane outlived its simulation"))?
            .into_inner();
        let (rec, core) = control.into_parts();
        Ok((rec, core, end))
    }
}
