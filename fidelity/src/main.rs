//! `splai-fidelity SCENARIO`: runs a scenario in the simulator and for real, at the same time
//! scale, and prints how far apart they are. Exits 1 when a metric is out of tolerance.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use splai_fidelity::real::check_faults;
use splai_fidelity::report::{Tolerances, over_seeds};
use splai_fidelity::{DelaySource, Measured, Options, measure};
use splai_sim::SeedRange;
use splai_sim::calibrate::Delays;
use splai_sim::plot;
use splai_sim::scenario::Scenario;

/// Run a scenario in the simulator and for real (the operator, agents and a Kubernetes API
/// server), and compare the two.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The scenario file, such as scenarios/quickstart.yaml
    scenario: PathBuf,
    /// The seed of every random draw [default: the scenario's `seed`]
    #[arg(long)]
    seed: Option<u64>,
    /// Run each seed of this range (such as 1-5) and hold the means over them to the
    /// tolerances; each seed's outputs go to DIR/seed-N with --out.
    #[arg(long, value_name = "RANGE", conflicts_with = "seed")]
    seeds: Option<SeedRange>,
    /// Every time in the scenario is multiplied by this, in both runs: 0.05 runs a 20-minute
    /// scenario in a minute. Reported times are in the scenario's own seconds.
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Run against this cluster (a kind cluster, say) instead of a local API server started from
    /// the test bed. The operator and the agents still run in this process; the cluster's own
    /// SPLAI operator, if any, must not watch the run's namespace.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write the comparison (fidelity.json, fidelity.csv, jct_cdf.svg) and each run's outputs
    /// (simulated/, real/) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Largest relative error allowed on makespan and mean JCT.
    #[arg(long, default_value_t = 0.10)]
    max_time_error: f64,
    /// Largest difference allowed on the warm-cache hit rate, in percentage points.
    #[arg(long, default_value_t = 5.0)]
    max_hit_rate_points: f64,
    /// Give the simulator these control-plane delays (what `splai-sim calibrate` printed for
    /// this cluster) instead of fitting them from the real run itself.
    #[arg(long, value_name = "FILE", conflicts_with = "uncalibrated")]
    calibration: Option<PathBuf>,
    /// Give the simulator the time-scaled scenario's own delays (`networkLatencyMs`,
    /// `submitLatencyMs`), to see what calibration changes.
    #[arg(long)]
    uncalibrated: bool,
    /// The operator's status-write batching interval, as its `--flush-ms`.
    #[arg(long, default_value_t = 100)]
    flush_ms: u64,
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("splai-fidelity: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main_inner() -> Result<bool> {
    let args = Args::parse();
    // The operator's and agents' logs, filtered by RUST_LOG (warnings by default).
    let _telemetry = splai_telemetry::Telemetry::init("splai-fidelity", false)?;
    if !(args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 1.0) {
        anyhow::bail!(
            "--time-scale {} is outside (0, 1]: it is the factor every time of the scenario is multiplied by",
            args.time_scale
        );
    }
    let sc = Scenario::load(&args.scenario)?;
    check_faults(&sc)?;
    let opts = Options {
        seed: args.seed.unwrap_or(sc.seed),
        time_scale: args.time_scale,
        tolerances: Tolerances {
            time: args.max_time_error,
            hit_rate_points: args.max_hit_rate_points,
        },
        flush_interval: Duration::from_millis(args.flush_ms.max(10)),
        artifacts: std::env::temp_dir().join(format!("splai-fidelity-{}", std::process::id())),
        delays: match (&args.calibration, args.uncalibrated) {
            (Some(path), _) => DelaySource::Given(Delays::load(path)?),
            (None, true) => DelaySource::Scenario,
            (None, false) => DelaySource::Measured,
        },
        agent_program: std::env::current_exe()?.with_file_name("splai-fidelity-agent"),
    };
    let seeds: Vec<u64> = match &args.seeds {
        Some(range) => range.range().collect(),
        None => vec![args.seed.unwrap_or(sc.seed)],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for &seed in &seeds {
        let opts = Options {
            seed,
            ..opts.clone()
        };
        let measured = runtime.block_on(async {
            let (client, ns, owned) = cluster(args.kubeconfig.as_deref(), seed).await?;
            eprintln!(
                "splai-fidelity: running {} (seed {seed}) in the simulator and for real in namespace {ns}",
                sc.name
            );
            let measured = measure(client.clone(), &ns, &sc, &opts).await;
            if owned {
                let _ = Api::<Namespace>::all(client)
                    .delete(&ns, &DeleteParams::default())
                    .await;
            }
            anyhow::Ok(measured?)
        });
        let _ = std::fs::remove_dir_all(&opts.artifacts);
        let measured = measured?;
        print!("{}", measured.report.table());
        if let Some(dir) = &args.out {
            let dir = match args.seeds {
                Some(_) => dir.join(format!("seed-{seed}")),
                None => dir.clone(),
            };
            write_outputs(&dir, &measured)?;
        }
        reports.push(measured.report);
    }
    if args.seeds.is_none() {
        return Ok(reports[0].pass);
    }
    let over = over_seeds(&reports);
    println!();
    print!("{}", over.table());
    if let Some(dir) = &args.out {
        write(
            dir,
            "fidelity.json",
            serde_json::to_string_pretty(&over)? + "\n",
        )?;
        write(dir, "fidelity.csv", over.csv()?)?;
    }
    Ok(over.pass)
}

fn write(dir: &Path, name: &str, body: String) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))
}

/// Each run's outputs (simulated/, real/ with admissions.csv) and the comparison
/// (fidelity.json, fidelity.csv, jct_cdf.svg) in `dir`.
fn write_outputs(dir: &Path, m: &Measured) -> Result<()> {
    let Measured {
        scaled,
        simulated,
        real,
        real_summary,
        report,
    } = m;
    simulated.write(&dir.join("simulated"))?;
    let fleet_cpu = scaled
        .fleet
        .iter()
        .map(|g| u64::from(g.count) * u64::from(g.capabilities.cpu_millis))
        .sum();
    splai_sim::output::write_all(&dir.join("real"), real_summary, &real.rec, fleet_cpu)?;
    let mut admissions = csv::Writer::from_writer(Vec::new());
    for a in &real.admissions {
        admissions.serialize(a)?;
    }
    write(
        &dir.join("real"),
        splai_sim::calibrate::ADMISSIONS_CSV,
        String::from_utf8(admissions.into_inner()?)?,
    )?;
    write(
        dir,
        "fidelity.json",
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    write(dir, "fidelity.csv", report.csv()?)?;
    write(
        dir,
        "jct_cdf.svg",
        plot::jct_cdf_svg(&[
            ("simulated", plot::completed_jcts_s(&simulated.recorder)),
            ("real", plot::completed_jcts_s(&real.rec)),
        ])?,
    )
}

/// A client and a fresh namespace: on the given cluster (the namespace is deleted afterwards),
/// or on a local API server from the test bed.
async fn cluster(kubeconfig: Option<&Path>, seed: u64) -> Result<(Client, String, bool)> {
    let Some(path) = kubeconfig else {
        let (client, ns) = splai_testbed::namespace("fidelity").await?;
        return Ok((client, ns, false));
    };
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("{}: not a usable kubeconfig", path.display()))?;
    let client = Client::try_from(config)?;
    let ns = format!(
        "splai-fidelity-{}-{seed}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let object = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    Ok((client, ns, true))
}
