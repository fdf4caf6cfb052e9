//! `splai-sim`: run, compare, sweep and gate scenarios. See `splai-sim --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use splai_scheduler::Strategy;
use splai_sim::{Engine, Run, scenario::Scenario};

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
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "splai")]
        policy: Strategy,
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Write summary.json, CSVs and plots here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Check the core's invariants after every event.
        #[arg(long)]
        check_invariants: bool,
    },
    /// Run several policies over a range of seeds and print the means side by side.
    Compare {
        scenario: PathBuf,
        /// Comma-separated, e.g. splai,least-loaded,random
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "splai,least-loaded,round-robin,random,first-fit"
        )]
        policies: Vec<Strategy>,
        /// A range such as 1-10
        #[arg(long, default_value = "1-5")]
        seeds: SeedRange,
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Also write the table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Run many seeds in parallel, checking invariants after every step; exits non-zero and
    /// prints the command that reproduces the first failure.
    Sweep {
        scenario: PathBuf,
        #[arg(long, default_value = "1-100")]
        seeds: SeedRange,
        #[arg(long, default_value = "splai")]
        policy: Strategy,
        #[arg(long, default_value = "des")]
        engine: Engine,
        /// Worker threads; defaults to the number of cores.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Compare quality metrics with a committed baseline; exits non-zero on a regression.
    Regress {
        scenarios: Vec<PathBuf>,
        #[arg(long)]
        baseline: PathBuf,
        /// Write the current metrics as the new baseline instead of comparing.
        #[arg(long)]
        update: bool,
    },
    /// Print the JSON Schema of scenario files (committed as scenarios/scenario.schema.json).
    Schema,
    /// Show every decision about one task: the terms of its score and its runner-up, or why it waited.
    Explain {
        scenario: PathBuf,
        /// JOB/TASK, e.g. rag-3/summarize-2
        #[arg(long)]
        task: String,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "splai")]
        policy: Strategy,
    },
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
        } => {
            let sc = Scenario::load(&scenario)?;
            let seed = seed.unwrap_or(sc.seed);
            let result = Run {
                scenario: &sc,
                seed,
                strategy: policy,
                engine,
                check_invariants,
                explain: None,
            }
            .execute()?;
            print!("{}", result.table());
            if let Some(dir) = out {
                result.write(&dir)?;
                println!("wrote {}", dir.display());
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
        } => {
            let sc = load(&scenario)?;
            let table = splai_sim::compare::compare(&sc, &policies, seeds.range(), engine)?;
            print!("{}", table.render());
            if let Some(path) = csv {
                std::fs::write(&path, table.csv())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
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
            println!("{}", report.line());
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
        } => {
            let mut loaded = Vec::new();
            for p in &scenarios {
                loaded.push((p.display().to_string(), load(p)?));
            }
            if update {
                let b = splai_sim::regress::measure(&loaded)?;
                std::fs::write(&baseline, serde_json::to_string_pretty(&b)? + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", baseline.display()))?;
                println!("wrote {}", baseline.display());
                return Ok(ExitCode::SUCCESS);
            }
            let b = splai_sim::regress::Baseline::load(&baseline)?;
            let report = splai_sim::regress::check(&loaded, &b)?;
            print!("{}", report.render());
            if report.regressions() == 0 {
                Ok(ExitCode::SUCCESS)
            } else {
                bail_code(1)
            }
        }
        Command::Schema => {
            println!("{}", splai_sim::scenario::schema_json());
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
            println!(
                "decisions about {task} (seed {seed}, policy {}):",
                policy.name()
            );
            for line in log {
                println!("  {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An inclusive range of seeds, written `A-B` or `A`.
#[derive(Clone, Debug)]
struct SeedRange(u64, u64);

impl SeedRange {
    fn range(&self) -> std::ops::RangeInclusive<u64> {
        self.0..=self.1
    }
}

impl std::str::FromStr for SeedRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a seed range such as 1-100");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
        Ok(SeedRange(a, b))
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
