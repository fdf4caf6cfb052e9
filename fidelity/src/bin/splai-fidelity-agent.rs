//! `splai-fidelity-agent`: one agent of a real run (`splai-fidelity`), as a process of its own.
//! It speaks the real protocol to the operator and runs the simulator's worker model for the
//! scenario's worker it is given (fidelity/src/agents.rs says why it is a process). Started by
//! `splai-fidelity`, not by hand.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_fidelity::agents::cold_line;
use splai_fidelity::real::agent_dead_after;
use splai_protocol::{Agent, TokioNet};
use splai_sim::executor::{AgentFaults, SimExecutor, World, agent_config};
use splai_sim::scenario::{FaultKind, Scenario};
use splai_sim::worker::SimWorker;
use splai_sim::workload::arrivals;

/// One agent of a `splai-fidelity` run.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The time-scaled scenario the run makes.
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long)]
    seed: u64,
    /// The scenario's worker this agent is.
    #[arg(long)]
    worker: String,
    /// The operator's agent endpoint, host:port.
    #[arg(long)]
    endpoint: String,
    /// What the operator puts before a scenario's job name.
    #[arg(long, default_value = "")]
    key_prefix: String,
    /// Time 0 of the run, in Unix milliseconds.
    #[arg(long)]
    epoch_unix_ms: u64,
    /// When to register, in ms since time 0.
    #[arg(long)]
    boot_ms: u64,
    #[arg(long, default_value_t = 1)]
    incarnation: u64,
    /// This agent replaces one that crashed: it starts with no model warm.
    #[arg(long)]
    restarted: bool,
    /// Where to append each model load: job, task, attempt, cold.
    #[arg(long)]
    cold_log: PathBuf,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry = splai_telemetry::Telemetry::init("splai-fidelity-agent", false)?;
    let sc = Scenario::load(&args.scenario)?;
    // The run's draws, in the order the simulator and the run make them.
    let arrivals = arrivals(&sc, &mut ChaCha8Rng::seed_from_u64(args.seed));
    let fleet = SimWorker::fleet(&sc);
    let Some(mut me) = fleet.into_iter().find(|w| w.name == args.worker) else {
        bail!("the scenario has no worker {}", args.worker);
    };
    if args.restarted {
        me.crash();
    }
    let log = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.cold_log)
            .with_context(|| format!("opening {}", args.cold_log.display()))?,
    );
    let world = Arc::new(World {
        key_prefix: args.key_prefix.clone(),
        on_cold: Some(Box::new(move |key, cold| {
            let mut f = splai_sim::executor::lock(&log);
            // One write per line, so a kill leaves at most the last line half-written.
            let _ = f.write_all(cold_line(key, cold).as_bytes());
        })),
        ..World::new(&sc, args.seed, &arrivals)
    });
    let worker = Arc::new(Mutex::new(me));
    let caps = splai_sim::executor::lock(&worker).caps.clone();
    let interval = Duration::from_millis(sc.heartbeat_interval_ms.max(1));
    let mut config = agent_config(&sc, &args.worker, caps, interval, args.endpoint.clone());
    config.dead_after = agent_dead_after(config.dead_after);
    config.incarnation = args.incarnation;
    let executor = SimExecutor {
        world: Arc::clone(&world),
        worker: Arc::clone(&worker),
    };
    let (agent, handle) = Agent::new(TokioNet, config, executor);

    let since_epoch = || unix_ms().saturating_sub(args.epoch_unix_ms);
    tokio::time::sleep(Duration::from_millis(
        args.boot_ms.saturating_sub(since_epoch()),
    ))
    .await;
    let running = tokio::spawn(agent.run());

    // This agent's share of the scenario's faults; crashes and freezes are the run's to make
    // (SIGKILL, SIGSTOP).
    let by_name = [(args.worker.clone(), 0)].into_iter().collect();
    let handles = [handle];
    let workers = [worker];
    let mut faults = AgentFaults::new(&sc, &by_name, &handles, &workers, &world);
    for (at, i, on) in sc.fault_timeline() {
        if matches!(
            sc.faults[i].kind,
            FaultKind::Crash { .. } | FaultKind::Freeze { .. }
        ) {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(since_epoch()))).await;
        faults.apply(i, on, since_epoch().max(at));
    }
    running.await?;
    Ok(())
}
