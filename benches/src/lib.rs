//! Workloads for the benchmarks, drawn from the shared Alibaba traces so that the fleet and
//! the task mix look like production: node shapes from the GPU fleet trace (v2023) and model
//! popularity from the GenAI request trace (v2026). Everything is seeded.

use std::path::PathBuf;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng as _, SeedableRng};

use splai_scheduler::api::{Capabilities, JobSpec, Resources, RetryPolicy, TaskKind, TaskSpec};

/// `../shared/traces` from the project root, or `$SPLAI_TRACES`.
pub fn traces_dir() -> PathBuf {
    std::env::var_os("SPLAI_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/traces"))
        })
}

fn read(rel: &str) -> String {
    let path = traces_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; set SPLAI_TRACES to the shared traces folder",
            path.display()
        )
    })
}

/// The seeded generator every workload uses.
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
}

/// Models of the GenAI trace with their request counts, most popular first.
pub fn model_popularity() -> Vec<(String, u64)> {
    let text = read("alibaba-v2026-genai/lora_request_trace.part1.csv");
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for line in text.lines().skip(1) {
        if let Some(m) = line.split(',').nth(9).filter(|m| !m.is_empty()) {
            *counts.entry(m.to_owned()).or_default() += 1;
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

pub struct Mix {
    nodes: Vec<(u32, u32, u32, String)>,
    models: Vec<(String, u64)>,
    total: u64,
}

pub const ZONES: [&str; 4] = ["zone-a", "zone-b", "zone-c", "zone-d"];

impl Mix {
    pub fn load() -> Self {
        let text = read("alibaba-gpu-v2023/openb_node_list_all_node.csv");
        let nodes = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                Some((
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.parse().ok()?,
                    f.get(4)?.to_string(),
                ))
            })
            .collect();
        let models = model_popularity();
        let total = models.iter().map(|m| m.1).sum();
        Mix {
            nodes,
            models,
            total,
        }
    }

    pub fn model(&self, rng: &mut Rng) -> &str {
        let mut x = rng.below(self.total);
        for (m, c) in &self.models {
            if x < *c {
                return m;
            }
            x -= c;
        }
        &self.models[0].0
    }

    /// `n` workers, cycling through the trace's nodes, spread over four zones.
    pub fn fleet(&self, n: usize, seed: u64) -> Vec<(String, Capabilities, Vec<String>)> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let (cpu, mem, gpus, gpu_model) =
                    &self.nodes[(rng.below(self.nodes.len() as u64)) as usize];
                let mut tools = vec!["python".to_string()];
                if rng.below(10) < 3 {
                    tools.push("ffmpeg".into());
                }
                let (models, warm) = if *gpus > 0 {
                    tools.push("cuda".into());
                    (
                        vec!["*".to_string()],
                        vec![
                            self.model(&mut rng).to_owned(),
                            self.model(&mut rng).to_owned(),
                        ],
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                let caps = Capabilities {
                    cpu_millis: *cpu,
                    memory_mib: *mem,
                    gpus: *gpus,
                    gpu_model: (!gpu_model.is_empty()).then(|| gpu_model.clone()),
                    models,
                    tools,
                    locality: Some(ZONES[i % ZONES.len()].into()),
                    speed_factor: [0.8, 1.0, 1.0, 1.25][rng.below(4) as usize],
                    ..Capabilities::default()
                };
                (format!("node-{i:05}"), caps, warm)
            })
            .collect()
    }

    /// One task of the mix: 70% command steps, 30% single-GPU inference calls.
    pub fn task(&self, id: String, rng: &mut Rng) -> TaskSpec {
        let locality = (rng.below(2) == 0).then(|| ZONES[rng.below(4) as usize].to_string());
        let expected = Some(5_000 + rng.below(55_000));
        if rng.below(10) < 3 {
            TaskSpec {
                id,
                kind: TaskKind::Inference,
                resources: Resources {
                    cpu_millis: 2000,
                    memory_mib: 8192,
                    gpus: 1,
                },
                model: Some(self.model(rng).to_owned()),
                tools: vec!["cuda".into()],
                locality,
                expected_duration_ms: expected,
                ..TaskSpec::default()
            }
        } else {
            let mut tools = vec!["python".to_string()];
            if rng.below(5) == 0 {
                tools.push("ffmpeg".into());
            }
            TaskSpec {
                id,
                kind: TaskKind::Command,
                resources: Resources {
                    cpu_millis: [500, 1000, 2000, 4000][rng.below(4) as usize],
                    memory_mib: [512, 1024, 4096, 8192][rng.below(4) as usize],
                    gpus: 0,
                },
                tools,
                locality,
                expected_duration_ms: expected,
                retry: RetryPolicy::default(),
                ..TaskSpec::default()
            }
        }
    }

    /// A job of `n` independent tasks.
    pub fn wide_job(&self, tenant: &str, n: usize, seed: u64) -> JobSpec {
        let mut rng = Rng::new(seed);
        JobSpec {
            tenant: tenant.into(),
            tasks: (0..n)
                .map(|i| self.task(format!("t{i}"), &mut rng))
                .collect(),
            ..JobSpec::default()
        }
    }
}

/// A layered DAG of `n` tasks where each task depends on up to three tasks of the layer before.
pub fn layered_dag(n: usize, width: usize, seed: u64) -> JobSpec {
    let mut rng = Rng::new(seed);
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec {
            id: format!("t{i}"),
            ..TaskSpec::default()
        })
        .collect();
    let mut dependencies = Vec::new();
    for i in width..n {
        let layer_start = (i / width - 1) * width;
        let parents: Vec<String> = (0..3)
            .map(|_| format!("t{}", layer_start + rng.below(width as u64) as usize))
            .collect();
        dependencies.push(splai_scheduler::api::Dependency {
            task: format!("t{i}"),
            depends_on: parents,
        });
    }
    JobSpec {
        tenant: "bench".into(),
        tasks,
        dependencies,
        ..JobSpec::default()
    }
}

/// Registers `n` workers of the mix with the core and sends each one heartbeat with its warm models.
pub fn register_fleet(s: &mut splai_scheduler::Scheduler, mix: &Mix, n: usize) {
    use splai_scheduler::{Event, Heartbeat, Timestamp};
    for (name, capabilities, warm) in mix.fleet(n, 42) {
        s.handle(
            Event::WorkerRegistered {
                name: name.clone(),
                capabilities,
                incarnation: 1,
            },
            Timestamp(0),
        );
        s.handle(
            Event::Heartbeat(Heartbeat {
                worker: name,
                incarnation: 1,
                warm_models: warm,
                ..Heartbeat::default()
            }),
            Timestamp(0),
        );
    }
}
