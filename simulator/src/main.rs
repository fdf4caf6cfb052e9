//! `splai-sim`: run, compare, sweep and gate scenarios. See `splai-sim --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use splai_scheduler::Strategy;
use splai_sim::{Engine, Run, SeedRange, scenario::Scenario};

/// `print!` and `println!` that end the program when standard output cannot be written,
/// where the std macros panic: quietly with status 141, as a program stopped by SIGPIPE, when
/// the reader went away (`splai-sim ... | head`), else with a message and status 74 (EX_IOERR).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            eprintln!("splai-sim: cannot write to standard output: {e}");
            std::process::exit(74);
        }
    }};
}

macro_rules! outln {
    ($($t:tt)*) => {{
        out!($($t)*);
        out!("\n");
    }};
}

#[derive(Parser)]
#[command(
    name = "splai-sim",
    version,
    about = "Deterministic simulation of SPLAI scheduling, no cluster needed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario and print its summary.
    Run {
        /// The scenario file, such as scenarios/quickstart.yaml.
        scenario: PathBuf,
        /// The seed of every random draw in the run [default: the scenario's `seed`].
        #[arg(long)]
        seed: Option<u64>,
        /// The scheduling policy: the full SPLAI scheduler, a simple baseline, or a model of a peer
        /// scheduler (kube-scheduler onwards; see scheduler/src/peers/).
        #[arg(long, default_value = Strategy::Splai.name(), value_parser = policy())]
        policy: Strategy,
        /// The simulation engine.
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Write summary.json, CSVs and plots here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Check the core's invariants after every event.
        #[arg(long)]
        check_invariants: bool,
        /// Multiply every time in the scenario by this first (as `splai-fidelity` does for its
        /// real runs); the results are in the scaled time.
        #[arg(long, value_name = "FACTOR")]
        time_scale: Option<f64>,
    },
    /// Run several policies over a range of seeds and print the means side by side.
    Compare {
        /// The scenario file, such as scenarios/quickstart.yaml.
        scenario: PathBuf,
        /// The policies to compare, comma-separated [default: all of them].
        #[arg(
            long,
            value_delimiter = ',',
            default_values = Strategy::ALL.map(Strategy::name),
            hide_default_value = true,
            value_parser = policy()
        )]
        policies: Vec<Strategy>,
        /// The seeds to run each policy with: a range such as 1-10, or one seed.
        #[arg(long, default_value = "1-5")]
        seeds: SeedRange,
        /// The simulation engine.
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Also write the table, with every column, as CSV here.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Also write every policy's JCT CDF (all seeds' completed jobs) as one SVG plot here.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
    },
    /// Run many seeds in parallel, checking invariants after every step; exits non-zero and
    /// prints the command that reproduces the first failure.
    Sweep {
        /// The scenario file, such as scenarios/partition.yaml.
        scenario: PathBuf,
        /// The seeds to run: a range such as 1-100, or one seed.
        #[arg(long, default_value = "1-100")]
        seeds: SeedRange,
        /// The scheduling policy.
        #[arg(long, default_value = Strategy::Splai.name(), value_parser = policy())]
        policy: Strategy,
        /// The simulation engine.
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Worker threads; defaults to the number of cores.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Compare quality metrics with a committed baseline; exits non-zero on a regression.
    Regress {
        /// Scenario files, named as the baseline names them (scenarios/*.yaml from the
        /// workspace root).
        scenarios: Vec<PathBuf>,
        /// The baseline file, such as scenarios/baseline.json.
        #[arg(long, value_name = "FILE")]
        baseline: PathBuf,
        /// Write the current metrics as the new baseline instead of comparing. Refused while
        /// the current run fails a check of the committed baseline that --accept does not name.
        #[arg(long)]
        update: bool,
        /// With --update: a failed check to accept deliberately, as the report names it
        /// (`scenarios/quickstart.yaml:jct_p95_s`). Repeatable.
        #[arg(long, value_name = "SCENARIO:CHECK", requires = "update")]
        accept: Vec<String>,
    },
    /// Turn a shared Alibaba trace into a scenario file.
    #[command(subcommand)]
    Import(Import),
    /// Fit the control plane's delays (networkLatencyMs, submitLatencyMs) from real runs and
    /// print them as scenario settings.
    Calibrate {
        /// Folders of real runs: the `real` folder of `splai-fidelity --out DIR` (DIR/real).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Print the calibration as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of scenario files (committed as scenarios/scenario.schema.json).
    Schema,
    /// Show every decision about one task: the terms of its score and its runner-up, or why it waited.
    Explain {
        /// The scenario file, such as scenarios/quickstart.yaml.
        scenario: PathBuf,
        /// JOB/TASK, e.g. rag-3/summarize-2
        #[arg(long)]
        task: String,
        /// The seed of the run [default: the scenario's `seed`].
        #[arg(long)]
        seed: Option<u64>,
        /// The scheduling policy.
        #[arg(long, default_value = Strategy::Splai.name(), value_parser = policy())]
        policy: Strategy,
    },
}

/// Parses `--policy` names as the core's `Strategy` does, and makes the help list them: the
/// names come from `Strategy::ALL`, so the list cannot fall behind the core.
fn policy() -> impl TypedValueParser<Value = Strategy> {
    PossibleValuesParser::new(Strategy::ALL.map(Strategy::name))
        .map(|name| name.parse().expect("every name in Strategy::ALL parses"))
}

#[derive(Subcommand)]
enum Import {
    /// cluster-trace-v2018 batch DAG jobs (batch_task.csv).
    #[command(name = "alibaba-v2018")]
    V2018 {
        /// The trace's batch_task.csv (no header row).
        batch_task_csv: PathBuf,
        /// The scenario file to write.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// cluster-trace-gpu-v2023 node list to take CPU-only workers from (evenly through the
        /// list); without it, --workers machines of --machine-cores cores.
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// Nodes in the fleet.
        #[arg(long, default_value_t = 10)]
        workers: u32,
        /// Cores per machine without --fleet (1 GiB of memory per core), e.g. 14 for a pool of
        /// 14-slot machines when tasks ask for whole cores.
        #[arg(long, default_value_t = 96, conflicts_with = "fleet")]
        machine_cores: u32,
        /// Keep the first K jobs by arrival.
        #[arg(long)]
        jobs: Option<usize>,
        /// Offered cpu load while jobs arrive, with every task started as early as its DAG
        /// allows: the trace's arrival spacing is compressed or stretched to reach it. The
        /// default keeps a fleet busy enough that the scheduler's choices matter.
        #[arg(long, default_value_t = 0.9)]
        load: f64,
        /// Keep the trace's own arrival times instead of scaling them to --load.
        #[arg(long, conflicts_with = "load")]
        keep_times: bool,
        /// Cap on the parallel instances one task stands for.
        #[arg(long, default_value_t = 8)]
        max_instances: u32,
        /// Drop jobs with a task longer than this.
        #[arg(long, default_value_t = 1800)]
        max_task_seconds: u64,
        /// Give each job a deadline (deadlineSeconds) of F times its critical path, for the
        /// edf and lsf policies; without it, jobs have no deadline.
        #[arg(long, value_name = "F")]
        deadline_factor: Option<f64>,
    },
    /// cluster-trace-v2026-GenAI requests (lora_request_trace.csv).
    #[command(name = "alibaba-genai")]
    Genai {
        /// The trace's lora_request_trace.csv (with its header row).
        lora_trace_csv: PathBuf,
        /// The scenario file to write.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// cluster-trace-gpu-v2023 node list to take GPU workers from; without it, nodes of one
        /// GPU.
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// basemodel_update_latency csv: measured model load times; without it, a fixed time.
        #[arg(long)]
        cold_start: Option<PathBuf>,
        /// GPU nodes in the fleet, taken at even steps through the --fleet list so its mix of
        /// GPU models is kept; each model's speed factor is set from its published throughput.
        #[arg(long, default_value_t = 16)]
        workers: u32,
        /// Keep the first K requests by arrival (one job each).
        #[arg(long)]
        jobs: Option<usize>,
        /// Offered GPU load, counting run time only, averaged over the whole arrival span.
        #[arg(long, default_value_t = 0.7)]
        load: f64,
    },
    /// Batch DAG jobs (cluster-trace-v2018) and GenAI requests (cluster-trace-v2026) sharing
    /// one GPU fleet (cluster-trace-gpu-v2023) as two tenants with quotas: `batch` and `serving`.
    #[command(name = "alibaba-mixed")]
    Mixed {
        /// cluster-trace-v2018 batch_task.csv (no header row).
        batch_task_csv: PathBuf,
        /// cluster-trace-v2026-GenAI lora_request_trace.csv (with its header row).
        lora_trace_csv: PathBuf,
        /// The scenario file to write.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// cluster-trace-gpu-v2023 node list: GPU nodes taken at even steps through it.
        #[arg(long)]
        fleet: PathBuf,
        /// basemodel_update_latency csv: measured model load times; without it, a fixed time.
        #[arg(long)]
        cold_start: Option<PathBuf>,
        /// GPU nodes in the fleet.
        #[arg(long, default_value_t = 16)]
        workers: u32,
        /// Keep the first K DAG jobs by arrival.
        #[arg(long)]
        dag_jobs: Option<usize>,
        /// Keep the first K requests by arrival.
        #[arg(long)]
        requests: Option<usize>,
        /// Offered cpu load of the DAG jobs on the fleet's cores while they arrive.
        #[arg(long, default_value_t = 0.6)]
        cpu_load: f64,
        /// Offered GPU load of the requests.
        #[arg(long, default_value_t = 0.7)]
        gpu_load: f64,
        /// The share of the fleet's cores the batch tenant may hold at once.
        #[arg(long, default_value_t = 0.7)]
        batch_cpu_share: f64,
        /// The share of the fleet's GPUs the serving tenant may hold at once.
        #[arg(long, default_value_t = 0.9)]
        serving_gpu_share: f64,
    },
}

/// A generated scenario's name: its file's stem, so scenarios made with other options keep
/// apart in reports, or `fallback`.
fn scenario_name(out: &std::path::Path, fallback: &str) -> String {
    out.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

fn write_scenario(out: &std::path::Path, sc: &Scenario, command: &str) -> Result<()> {
    let yaml = serde_yaml_ng::to_string(sc)?;
    let text = format!(
        "# Generated by: {command}\n# Source traces: Alibaba clusterdata (see ../shared/traces/README.md).\n{yaml}"
    );
    std::fs::write(out, text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    // What was written must load back.
    Scenario::load(out)?;
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("splai-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            scenario,
            seed,
            policy,
            engine,
            out,
            check_invariants,
            time_scale,
        } => {
            let mut sc = Scenario::load(&scenario)?;
            if let Some(f) = time_scale {
                anyhow::ensure!(f.is_finite() && f > 0.0, "--time-scale {f} must be above 0");
                sc = splai_sim::scale::time_scaled(&sc, f);
            }
            let seed = seed.unwrap_or(sc.seed);
            let result = Run {
                scenario: &sc,
                seed,
                strategy: policy,
                engine,
                check_invariants,
                explain: None,
            };
            // A progress line on long runs, for people at a terminal; never in pipes or CI logs.
            use std::io::IsTerminal;
            let result = if std::io::stderr().is_terminal() {
                result.execute_with_progress()?
            } else {
                result.execute()?
            };
            out!("{}", result.table());
            match out {
                Some(dir) => {
                    result.write(&dir)?;
                    outln!("wrote {}", dir.display());
                }
                None => eprintln!(
                    "no files written: add --out DIR for summary.json, the CSVs and the plots"
                ),
            }
            let failures = result.check_failures();
            if failures.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for f in &failures {
                eprintln!("check failed: {f}");
            }
            eprintln!(
                "reproduce: splai-sim run {} --seed {seed} --policy {} --engine {}",
                scenario.display(),
                policy.name(),
                engine.name()
            );
            bail_code(1)
        }
        Command::Compare {
            scenario,
            policies,
            seeds,
            engine,
            csv,
            plot,
        } => {
            let sc = load(&scenario)?;
            let table = splai_sim::compare::compare(&sc, &policies, seeds.range(), engine)?;
            out!("{}", table.render());
            if let Some(path) = plot {
                std::fs::write(&path, table.plot()?)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            if let Some(path) = csv {
                std::fs::write(&path, table.csv())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                outln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep {
            scenario,
            seeds,
            policy,
            engine,
            threads,
        } => {
            let sc = load(&scenario)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let report = splai_sim::compare::sweep(&sc, seeds.range(), policy, engine, threads)?;
            outln!("{}", report.line());
            match report.failures.first() {
                None => Ok(ExitCode::SUCCESS),
                Some((seed, why)) => {
                    for (s, w) in report.failures.iter().take(10) {
                        eprintln!("seed {s}: {}", w.join("; "));
                    }
                    eprintln!(
                        "reproduce: splai-sim run {} --seed {seed} --policy {} --engine {} --check-invariants",
                        scenario.display(),
                        policy.name(),
                        engine.name()
                    );
                    let _ = why;
                    bail_code(1)
                }
            }
        }
        Command::Regress {
            scenarios,
            baseline,
            update,
            accept,
        } => {
            let mut loaded = Vec::new();
            for p in &scenarios {
                loaded.push((p.display().to_string(), load(p)?));
            }
            if update {
                let old = baseline
                    .exists()
                    .then(|| splai_sim::regress::Baseline::load(&baseline))
                    .transpose()?;
                let b = splai_sim::regress::update(&loaded, old.as_ref(), &accept)?;
                std::fs::write(&baseline, serde_json::to_string_pretty(&b)? + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", baseline.display()))?;
                outln!("wrote {}", baseline.display());
                return Ok(ExitCode::SUCCESS);
            }
            let b = splai_sim::regress::Baseline::load(&baseline)?;
            let report = splai_sim::regress::check(&loaded, &b)?;
            out!("{}", report.render());
            if report.regressions() == 0 {
                Ok(ExitCode::SUCCESS)
            } else {
                bail_code(1)
            }
        }
        Command::Import(which) => {
            // The command as a user would type it: the program by its name, the rest as given.
            let command = std::iter::once("splai-sim".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" ");
            let (sc, report, out) = match which {
                Import::V2018 {
                    batch_task_csv,
                    out,
                    fleet,
                    workers,
                    machine_cores,
                    jobs,
                    load,
                    keep_times,
                    max_instances,
                    max_task_seconds,
                    deadline_factor,
                } => {
                    let name = scenario_name(&out, "alibaba-v2018-dag");
                    let opts = splai_sim::import::v2018::Options {
                        jobs,
                        fleet: fleet.as_deref(),
                        workers,
                        machine_cores,
                        load: (!keep_times).then_some(load),
                        max_instances,
                        max_task_seconds,
                        deadline_factor,
                        name: &name,
                    };
                    let (sc, r) =
                        splai_sim::import::v2018::import(&batch_task_csv, &opts, &command)?;
                    (sc, r, out)
                }
                Import::Genai {
                    lora_trace_csv,
                    out,
                    fleet,
                    cold_start,
                    workers,
                    jobs,
                    load,
                } => {
                    let name = scenario_name(&out, "alibaba-genai");
                    let opts = splai_sim::import::genai::Options {
                        jobs,
                        fleet: fleet.as_deref(),
                        cold_start: cold_start.as_deref(),
                        workers,
                        load,
                        name: &name,
                    };
                    let (sc, r) =
                        splai_sim::import::genai::import(&lora_trace_csv, &opts, &command)?;
                    (sc, r, out)
                }
                Import::Mixed {
                    batch_task_csv,
                    lora_trace_csv,
                    out,
                    fleet,
                    cold_start,
                    workers,
                    dag_jobs,
                    requests,
                    cpu_load,
                    gpu_load,
                    batch_cpu_share,
                    serving_gpu_share,
                } => {
                    let name = scenario_name(&out, "alibaba-mixed");
                    let opts = splai_sim::import::mixed::Options {
                        dag_csv: &batch_task_csv,
                        genai_csv: &lora_trace_csv,
                        fleet: &fleet,
                        cold_start: cold_start.as_deref(),
                        workers,
                        dag_jobs,
                        requests,
                        cpu_load,
                        gpu_load,
                        batch_cpu_share,
                        serving_gpu_share,
                        name: &name,
                    };
                    let (sc, r) = splai_sim::import::mixed::import(&opts, &command)?;
                    (sc, r, out)
                }
            };
            write_scenario(&out, &sc, &command)?;
            out!("{report}");
            outln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate { runs, json } => {
            let measured = runs
                .iter()
                .map(|dir| splai_sim::calibrate::read_run(dir))
                .collect::<Result<Vec<_>, _>>()?;
            let c = splai_sim::calibrate::fit(&measured)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                out!("{}", c.text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            outln!("{}", splai_sim::scenario::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            scenario,
            task,
            seed,
            policy,
        } => {
            let sc = load(&scenario)?;
            let Some((job, t)) = task.split_once('/') else {
                bail!("--task must be JOB/TASK, such as rag-3/summarize-2")
            };
            let seed = seed.unwrap_or(sc.seed);
            let run = Run {
                scenario: &sc,
                seed,
                strategy: policy,
                engine: Engine::Des,
                check_invariants: false,
                explain: Some((job.into(), t.into())),
            }
            .execute()?;
            let (_, _, log) = run
                .recorder
                .explain
                .as_ref()
                .expect("explain was asked for");
            if log.is_empty() {
                bail!(
                    "no decision was made about {task}: check the job and task names (jobs.csv and tasks.csv list them)"
                );
            }
            outln!(
                "decisions about {task} (seed {seed}, policy {}):",
                policy.name()
            );
            for line in log {
                outln!("  {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn bail_code(code: u8) -> Result<ExitCode> {
    if code == 0 {
        bail!("unreachable");
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn args_without_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                out.push(format!("{path} {}", sub.get_name()));
            }
            args_without_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let mut missing = Vec::new();
        args_without_help(&Cli::command(), "splai-sim", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }
}
