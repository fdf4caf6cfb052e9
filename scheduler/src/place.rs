//! Placement: choosing a worker for one task, by the SPLAI score or by a baseline, and saying
//! why a task cannot be placed.

use std::fmt;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use crate::fleet::{Fleet, WorkerId, WorkerRt};
use crate::intern::BitSet;
use crate::policy::QuotaBlock;
use crate::score::{Explanation, RunnerUp, ScoreTerms, Strategy};
use crate::settings::Settings;

/// What placement needs to know of a task, apart from its duration hint. Tasks of one shape
/// are interchangeable for feasibility, so a failed shape need not be tried again in a pass.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub cpu: u32,
    pub mem: u32,
    pub gpus: u32,
    pub model: Option<u32>,
    pub tools: BitSet,
    pub locality: Option<u32>,
    pub classification: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct Shapes {
    pub list: Vec<Shape>,
    ids: FxHashMap<Shape, u32>,
    /// Per shape: which classes meet its hard constraints, for the first `len` classes.
    class_ok: Vec<Vec<bool>>,
    /// Per shape: the classes that meet them, best static score first (see `static_score`).
    ranked: Vec<Vec<(f64, u32)>>,
}

/// The part of the score that depends only on the task's shape and the worker's class:
/// `capability_match` and `locality_score`, weighted.
fn static_terms(shape: &Shape, sig: &crate::fleet::ClassSig) -> (f64, f64) {
    let capability = if shape.gpus > 0 {
        f64::from(shape.gpus) / f64::from(sig.gpus.max(1))
    } else if sig.gpus > 0 {
        0.0
    } else {
        1.0
    };
    let locality = if shape.locality.is_some() && shape.locality == sig.zone {
        1.0
    } else {
        0.0
    };
    (capability, locality)
}

impl Shapes {
    pub fn intern(&mut self, shape: Shape) -> u32 {
        if let Some(&id) = self.ids.get(&shape) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(shape.clone());
        self.ids.insert(shape, id);
        self.class_ok.push(Vec::new());
        self.ranked.push(Vec::new());
        id
    }

    /// The classes that meet the shape's hard constraints, as of the last placement of the
    /// shape, best static score first.
    pub fn ranked(&self, shape: u32) -> &[(f64, u32)] {
        &self.ranked[shape as usize]
    }

    fn refresh(&mut self, shape: u32, fleet: &Fleet, weights: &crate::score::Weights) {
        let ok = &mut self.class_ok[shape as usize];
        if ok.len() == fleet.classes.len() {
            return;
        }
        let s = &self.list[shape as usize];
        let ranked = &mut self.ranked[shape as usize];
        for c in ok.len()..fleet.classes.len() {
            let sig = fleet.classes[c].sig();
            ok.push(
                sig.cpu >= s.cpu
                    && sig.mem >= s.mem
                    && sig.gpus >= s.gpus
                    && s.model
                        .is_none_or(|m| sig.any_model || sig.models.contains(m))
                    && sig.tools.is_superset(&s.tools)
                    && s.classification.is_none_or(|c| {
                        sig.classifications.is_empty() || sig.classifications.contains(c)
                    }),
            );
            if ok[c] {
                let (capability, locality) = static_terms(s, sig);
                ranked.push((
                    weights.capability_match * capability + weights.locality_score * locality,
                    c as u32,
                ));
            }
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
}

/// Why a ready task has no worker.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingReason {
    NoWorkers,
    NoWorkerServesModel {
        model: Arc<str>,
    },
    NoWorkerHasTools {
        tools: Vec<Arc<str>>,
    },
    NoWorkerHasGpus {
        gpus: u32,
    },
    NoWorkerLargeEnough {
        cpu: u32,
        mem: u32,
    },
    NoWorkerCleared {
        classification: Arc<str>,
    },
    NoWorkerInAllowedLocalities,
    NoHealthyWorker {
        model: Option<Arc<str>>,
        unhealthy: u32,
    },
    /// The best free worker would load the model cold; a busy worker with it warm frees up sooner.
    WaitingForWarmWorker {
        worker: Arc<str>,
        model: Arc<str>,
        in_ms: u64,
    },
    /// The model already holds its share of warm capacity: the task waits for a worker that has
    /// it warm rather than load it cold and evict another model.
    WarmShareHeld {
        model: Arc<str>,
        worker: Arc<str>,
        /// The model's share of the warm task slots.
        share: f64,
        /// The model's share of the queued and running work.
        demand: f64,
    },
    AllBusy {
        eligible: u32,
        cpu: u32,
        mem: u32,
        gpus: u32,
    },
    Quota(QuotaBlock),
    /// The `volcano` policy starts a job's ready tasks together or not at all.
    Gang {
        ready: u32,
    },
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PendingReason::*;
        match self {
            NoWorkers => write!(f, "no workers are registered"),
            NoWorkerServesModel { model } => write!(f, "no worker serves model {model}"),
            NoWorkerHasTools { tools } => {
                let t: Vec<&str> = tools.iter().map(|t| &**t).collect();
                write!(f, "no worker offers the tools [{}]", t.join(", "))
            }
            NoWorkerHasGpus { gpus } => write!(f, "no worker has {gpus} GPUs"),
            NoWorkerLargeEnough { cpu, mem } => {
                write!(
                    f,
                    "no worker is large enough for {cpu}m cpu and {mem}Mi memory"
                )
            }
            NoWorkerCleared { classification } => {
                write!(f, "no worker is cleared for {classification} data")
            }
            NoWorkerInAllowedLocalities => write!(
                f,
                "no suitable worker is in the tenant's allowed localities"
            ),
            NoHealthyWorker {
                model: Some(m),
                unhealthy,
            } => {
                write!(
                    f,
                    "no healthy worker has model {m} ({unhealthy} suitable workers are stale or lost)"
                )
            }
            NoHealthyWorker {
                model: None,
                unhealthy,
            } => {
                write!(
                    f,
                    "no healthy worker can run it ({unhealthy} suitable workers are stale or lost)"
                )
            }
            AllBusy {
                eligible,
                cpu,
                mem,
                gpus,
            } => write!(
                f,
                "all {eligible} eligible workers are busy: none has {cpu}m cpu, {mem}Mi memory and {gpus} GPUs free"
            ),
            WaitingForWarmWorker {
                worker,
                model,
                in_ms,
            } => write!(
                f,
                "waiting about {:.1}s for {worker}, which has model {model} warm, rather than loading it cold elsewhere",
                *in_ms as f64 / 1000.0
            ),
            WarmShareHeld {
                model,
                worker,
                share,
                demand,
            } => write!(
                f,
                "waiting for a worker with model {model} warm, such as {worker}: it holds {:.1}% of the warm slots for {:.1}% of the work, so a cold load would only evict another model",
                share * 100.0,
                demand * 100.0
            ),
            Quota(q) => write!(f, "{q}"),
            Gang { ready } => write!(
                f,
                "volcano gang: the job's {ready} ready tasks do not all fit the free capacity at once"
            ),
        }
    }
}

/// How many times `candidates_per_class` of the tightest fits a task that packs scores per
/// class (see `Placer::best_scored`).
const PACK_SCAN: usize = 16;

/// `model_warm_cache` of a cold load that evicts nothing anyone waits for.
const COLD_CREDIT: f64 = 0.25;
/// Queued tasks of an evicted model at which a cold load loses half of `COLD_CREDIT`.
const EVICTION_HALF_DEMAND: f64 = 4.0;

pub(crate) struct Request<'a> {
    pub shape: u32,
    /// The task's job: kube-scheduler spreads a job's tasks.
    pub job: u32,
    pub hint_ms: u64,
    pub allowed_zones: Option<&'a BitSet>,
    pub strategy: Strategy,
    /// Whether the task packs (`ScoreTerms::packing`): it loads no model and larger tasks
    /// without a model wait for room.
    pub packs: bool,
    /// Seeds the `random` baseline for this one decision.
    pub rng_key: u64,
}

pub(crate) struct Placer<'a> {
    pub fleet: &'a Fleet,
    pub settings: &'a Settings,
    /// Queued tasks per model id.
    pub demand: &'a [u32],
}

struct Scored {
    worker: WorkerId,
    score: f64,
    terms: ScoreTerms,
    predicted_ms: u64,
    cold: bool,
}

impl Placer<'_> {
    fn zone_ok(&self, zones: Option<&BitSet>, class: usize) -> bool {
        zones.is_none_or(|z| {
            self.fleet.classes[class]
                .sig()
                .zone
                .is_some_and(|id| z.contains(id))
        })
    }

    fn terms(&self, shape: &Shape, req: &Request<'_>, w: &WorkerRt) -> Scored {
        let hint_ms = req.hint_ms;
        let s = self.settings;
        let sig = self.fleet.classes[w.class as usize].sig();
        let capability_match = if shape.gpus > 0 {
            f64::from(shape.gpus) / f64::from(sig.gpus.max(1))
        } else if sig.gpus > 0 {
            0.0
        } else {
            1.0
        };
        let warm = shape.model.is_some_and(|m| w.warm.contains(m));
        let cold = shape.model.is_some() && !warm;
        let model_warm_cache = match shape.model {
            None => 0.0,
            Some(_) if warm => 1.0,
            Some(_) => {
                // A cold load on a full cache evicts a model; losing one that queued tasks are
                // waiting for costs more than filling a free slot or evicting an idle model.
                let full = w.slots_seen > 0 && w.warm.len() >= w.slots_seen;
                let victim = if full {
                    w.warm
                        .iter()
                        .map(|m| self.demand.get(m as usize).copied().unwrap_or(0))
                        .min()
                        .unwrap_or(0)
                } else {
                    0
                };
                let d = f64::from(victim);
                COLD_CREDIT * (1.0 - d / (d + EVICTION_HALF_DEMAND))
            }
        };
        let locality = shape.locality.is_some() && shape.locality == sig.zone;
        let packing = if req.packs {
            let after = |cap: u32, free: u32, ask: u32| {
                if cap == 0 {
                    0.0
                } else {
                    f64::from(cap - free.min(cap) + ask).min(f64::from(cap)) / f64::from(cap)
                }
            };
            after(w.caps.cpu_millis, w.free_cpu, shape.cpu)
                .max(after(w.caps.memory_mib, w.free_mem, shape.mem))
                .max(after(w.caps.gpus, w.free_gpus, shape.gpus))
        } else {
            0.0
        };
        let depth = f64::from(w.depth());
        let predicted = hint_ms as f64 / w.speed + if cold { s.model_load_ms as f64 } else { 0.0 };
        let terms = ScoreTerms {
            capability_match,
            model_warm_cache,
            locality_score: if locality { 1.0 } else { 0.0 },
            packing,
            queue_penalty: depth / (depth + s.queue_half_depth.max(1e-9)),
            latency_prediction: predicted / (predicted + s.latency_half_ms.max(1e-9)),
        };
        Scored {
            worker: 0,
            score: terms.total(&s.weights),
            terms,
            predicted_ms: predicted as u64,
            cold,
        }
    }

    /// Places one task, or says why it cannot be placed now.
    pub fn place(
        &self,
        shapes: &mut Shapes,
        req: &Request<'_>,
        rr_cursor: &mut usize,
    ) -> Result<(WorkerId, Explanation), PendingReason> {
        shapes.refresh(req.shape, self.fleet, &self.settings.weights);
        let ok = &shapes.class_ok[req.shape as usize];
        let shape = &shapes.list[req.shape as usize];
        let ranked = &shapes.ranked[req.shape as usize];
        let classes = || {
            ranked
                .iter()
                .map(|&(_, c)| c as usize)
                .filter(|&c| self.zone_ok(req.allowed_zones, c))
        };
        let feasible = |w: &WorkerRt| w.eligible() && w.fits(shape.cpu, shape.mem, shape.gpus);
        let class_feasible = |w: &WorkerRt| {
            feasible(w) && ok[w.class as usize] && self.zone_ok(req.allowed_zones, w.class as usize)
        };
        let (best, runner, candidates) = match req.strategy {
            Strategy::Splai => self.best_scored(shape, req, ranked, &feasible),
            Strategy::LeastLoaded => {
                // The least loaded feasible worker of each class is the first feasible in its load order.
                let best = classes()
                    .filter_map(|c| {
                        self.fleet.classes[c]
                            .by_load
                            .iter()
                            .find(|&&(_, _, w)| feasible(&self.fleet.workers[w as usize]))
                    })
                    .min()
                    .map(|&(_, _, w)| w);
                (
                    best.map(|w| self.scored(shape, req, w)),
                    None,
                    classes().count() as u32,
                )
            }
            Strategy::FirstFit => {
                let best = self
                    .fleet
                    .workers
                    .iter()
                    .position(&class_feasible)
                    .map(|i| i as WorkerId);
                (best.map(|w| self.scored(shape, req, w)), None, 1)
            }
            Strategy::RoundRobin => {
                let n = self.fleet.workers.len();
                let best = (0..n)
                    .map(|i| (*rr_cursor + i) % n)
                    .find(|&i| class_feasible(&self.fleet.workers[i]))
                    .map(|i| i as WorkerId);
                if let Some(w) = best {
                    *rr_cursor = (w as usize + 1) % n;
                }
                (best.map(|w| self.scored(shape, req, w)), None, 1)
            }
            Strategy::Random => {
                let all: Vec<WorkerId> = (0..self.fleet.workers.len() as WorkerId)
                    .filter(|&w| class_feasible(&self.fleet.workers[w as usize]))
                    .collect();
                let pick = (!all.is_empty()).then(|| {
                    let mut rng = ChaCha8Rng::seed_from_u64(req.rng_key);
                    all[(rng.next_u64() % all.len() as u64) as usize]
                });
                (
                    pick.map(|w| self.scored(shape, req, w)),
                    None,
                    all.len() as u32,
                )
            }
            Strategy::KubeScheduler
            | Strategy::Volcano
            | Strategy::Kueue
            | Strategy::LlmD
            | Strategy::RayServe
            | Strategy::Heft
            | Strategy::Edf
            | Strategy::Lsf => {
                let (best, candidates) = self.peer_pick(shape, req, &class_feasible, rr_cursor);
                (best.map(|w| self.scored(shape, req, w)), None, candidates)
            }
        };
        let Some(best) = best else {
            return Err(self.diagnose(shape, req.allowed_zones, ok));
        };
        let worker = self.fleet.workers[best.worker as usize].name.clone();
        let runner_up = runner.map(|r| {
            RunnerUp::new(
                self.fleet.workers[r.worker as usize].name.clone(),
                r.score,
                r.terms,
                &best.terms,
                &self.settings.weights,
            )
        });
        Ok((
            best.worker,
            Explanation {
                strategy: req.strategy,
                worker,
                score: best.score,
                terms: best.terms,
                predicted_ms: best.predicted_ms,
                cold_start: best.cold,
                candidates,
                runner_up,
            },
        ))
    }

    /// A peer policy's choice among the workers that can run the task now, and how many it
    /// looked at.
    fn peer_pick(
        &self,
        shape: &Shape,
        req: &Request<'_>,
        feasible: &dyn Fn(&WorkerRt) -> bool,
        cursor: &mut usize,
    ) -> (Option<WorkerId>, u32) {
        use crate::peers::{Node, Pod, heft, kube, llmd, ray_serve, volcano};
        let workers = &self.fleet.workers;
        let n = workers.len();
        let pod = Pod {
            cpu: shape.cpu,
            mem: shape.mem,
            gpus: shape.gpus,
            inference: shape.model.is_some(),
            hint_ms: req.hint_ms,
            model_load_ms: self.settings.model_load_ms,
        };
        let kube_like = match req.strategy {
            Strategy::KubeScheduler | Strategy::Kueue => true,
            Strategy::LlmD => !pod.inference,
            _ => false,
        };
        // kube-scheduler scans from where its last cycle stopped until it has found as many
        // feasible nodes as it scores; the others look at every worker in the fleet's order.
        let (start, limit) = if kube_like && n > 0 {
            (*cursor % n, kube::nodes_to_score(n))
        } else {
            (0, usize::MAX)
        };
        let mut ids: Vec<WorkerId> = Vec::new();
        let mut scanned = 0;
        for i in 0..n {
            let w = (start + i) % n;
            scanned += 1;
            if feasible(&workers[w]) {
                ids.push(w as WorkerId);
                if ids.len() == limit {
                    break;
                }
            }
        }
        if kube_like && n > 0 {
            *cursor = (start + scanned) % n;
        }
        // The job's attempts per worker and per zone, for PodTopologySpread.
        let spread = kube_like || req.strategy == Strategy::Volcano;
        let mut in_zone: FxHashMap<u32, u32> = FxHashMap::default();
        let same_job = |w: &WorkerRt| w.active.iter().filter(|a| a.0 == req.job).count() as u32;
        if spread {
            for w in workers {
                let c = same_job(w);
                if let (true, Some(z)) = (c > 0, self.fleet.classes[w.class as usize].sig().zone) {
                    *in_zone.entry(z).or_default() += c;
                }
            }
        }
        let nodes: Vec<Node> = ids
            .iter()
            .map(|&id| {
                let w = &workers[id as usize];
                let zone = self.fleet.classes[w.class as usize].sig().zone;
                Node {
                    id,
                    cpu: w.caps.cpu_millis,
                    mem: w.caps.memory_mib,
                    gpus: w.caps.gpus,
                    free_cpu: w.free_cpu,
                    free_mem: w.free_mem,
                    free_gpus: w.free_gpus,
                    zone,
                    depth: w.depth(),
                    same_job: if spread { same_job(w) } else { 0 },
                    same_job_in_zone: zone.and_then(|z| in_zone.get(&z).copied()).unwrap_or(0),
                    warm: shape.model.is_some_and(|m| w.warm.contains(m)),
                    models: w.warm.len(),
                    speed: w.speed,
                    tie: w.tie_key,
                }
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(req.rng_key);
        let pick = match req.strategy {
            Strategy::KubeScheduler | Strategy::Kueue => kube::pick(&nodes, &pod, &mut rng),
            Strategy::LlmD if pod.inference => llmd::pick(&nodes, &mut rng),
            Strategy::LlmD => kube::pick(&nodes, &pod, &mut rng),
            Strategy::Volcano => volcano::pick(&nodes, &pod, &mut rng),
            Strategy::RayServe => ray_serve::pick(&nodes, &pod, n, &mut rng),
            Strategy::Heft => heft::pick(&nodes, &pod),
            // ERDOS places a task on the first worker pool that can accommodate it.
            Strategy::Edf | Strategy::Lsf => (!nodes.is_empty()).then_some(0),
            Strategy::Splai
            | Strategy::LeastLoaded
            | Strategy::RoundRobin
            | Strategy::Random
            | Strategy::FirstFit => unreachable!("not a peer policy"),
        };
        (pick.map(|i| nodes[i].id), nodes.len() as u32)
    }

    fn scored(&self, shape: &Shape, req: &Request<'_>, w: WorkerId) -> Scored {
        Scored {
            worker: w,
            ..self.terms(shape, req, &self.fleet.workers[w as usize])
        }
    }

    /// The two best workers by score.
    ///
    /// Classes are visited best static score first (`capability_match` and `locality_score`
    /// depend only on the class). In each class it scores up to `candidates_per_class` feasible
    /// workers that have the model warm and as many of the least loaded: within a class the
    /// other terms differ only by queue depth, warmth and observed speed, so deeper in a list
    /// lies no better worker unless its observed speed is much higher. A task that packs trades
    /// fullness against queue depth, which no single list orders, so it also scores up to
    /// `PACK_SCAN` times as many of the tightest fits: every worker of a class of up to that
    /// many healthy members, where the search is exact. A class is skipped when even its best
    /// case — static terms, a warm model, a full worker, its shortest queue, no latency —
    /// cannot beat the runner-up so far, and the scan stops when no later class can. A worker
    /// on more than one list is scored once.
    fn best_scored(
        &self,
        shape: &Shape,
        req: &Request<'_>,
        ranked: &[(f64, u32)],
        feasible: &dyn Fn(&WorkerRt) -> bool,
    ) -> (Option<Scored>, Option<Scored>, u32) {
        let k = match self.settings.candidates_per_class {
            0 => usize::MAX,
            k => k as usize,
        };
        let scan_limit = k.saturating_mul(4);
        let pack_k = k.saturating_mul(PACK_SCAN);
        let w = &self.settings.weights;
        // Pruning relies on every weight being non-negative.
        let prune = [
            w.capability_match,
            w.model_warm_cache,
            w.locality_score,
            w.queue_penalty,
            w.latency_prediction,
        ]
        .iter()
        .all(|x| *x >= 0.0)
            && k != usize::MAX;
        let packs = req.packs && w.packing > 0.0;
        // The most the class-dependent terms can add: a warm model, or a worker filled up.
        let warm_bonus = if shape.model.is_some() {
            w.model_warm_cache
        } else if packs {
            w.packing
        } else {
            0.0
        };
        let half = self.settings.queue_half_depth.max(1e-9);
        let mut best: Option<Scored> = None;
        let mut second: Option<Scored> = None;
        let mut count = 0u32;
        let better = |a: &Scored, b: &Scored| {
            a.score > b.score
                || (a.score == b.score
                    && self.fleet.workers[a.worker as usize].tie_key
                        < self.fleet.workers[b.worker as usize].tie_key)
        };
        let mut seen: Vec<WorkerId> = Vec::new();
        for &(static_score, c) in ranked {
            let c = c as usize;
            if !self.zone_ok(req.allowed_zones, c) {
                continue;
            }
            let class = &self.fleet.classes[c];
            let Some(&(min_depth, _, _)) = class.by_load.first() else {
                continue;
            };
            let warm = shape
                .model
                .and_then(|m| class.warm.get(&m))
                .filter(|s| !s.is_empty());
            if let (true, Some(floor)) = (prune, second.as_ref().map(|s| s.score)) {
                if static_score + warm_bonus < floor {
                    break;
                }
                let depth = f64::from(min_depth);
                let bound = static_score
                    + if warm.is_some() || packs {
                        warm_bonus
                    } else {
                        0.0
                    }
                    - w.queue_penalty * depth / (depth + half);
                if bound < floor {
                    continue;
                }
            }
            // The workers of this class scored so far: a worker on two lists counts once.
            seen.clear();
            // Scores up to `$k` feasible workers of one list, skipping those already scored.
            macro_rules! scan {
                ($ids:expr, $k:expr, $limit:expr) => {{
                    let mut taken = 0;
                    for wid in $ids.take($limit) {
                        let worker = &self.fleet.workers[wid as usize];
                        if !feasible(worker) || seen.contains(&wid) {
                            continue;
                        }
                        seen.push(wid);
                        count += 1;
                        let s = self.scored(shape, req, wid);
                        if best.as_ref().is_none_or(|b| better(&s, b)) {
                            second = best.take();
                            best = Some(s);
                        } else if second.as_ref().is_none_or(|b| better(&s, b)) {
                            second = Some(s);
                        }
                        taken += 1;
                        if taken == $k {
                            break;
                        }
                    }
                }};
            }
            if let Some(warm) = warm {
                scan!(warm.iter().map(|&(_, _, wid)| wid), k, scan_limit);
            }
            scan!(class.by_load.iter().map(|&(_, _, wid)| wid), k, scan_limit);
            if packs {
                // The tightest fits first: the fewest free GPUs, then the least free cpu, that
                // can hold the task.
                scan!(
                    class
                        .by_free
                        .range((shape.gpus, shape.cpu, 0, 0)..)
                        .map(|&(_, _, _, wid)| wid),
                    pack_k,
                    pack_k.saturating_mul(4)
                );
            }
        }
        (best, second, count)
    }

    /// The first hard constraint that no worker meets, checked from the most to the least
    /// fundamental, so the reason names what the user can change.
    fn diagnose(&self, shape: &Shape, zones: Option<&BitSet>, ok: &[bool]) -> PendingReason {
        let f = self.fleet;
        let members = |pred: &dyn Fn(usize) -> bool| -> u32 {
            (0..f.classes.len())
                .filter(|&c| pred(c))
                .map(|c| f.classes[c].members)
                .sum()
        };
        if members(&|_| true) == 0 {
            return PendingReason::NoWorkers;
        }
        let sig = |c: usize| f.classes[c].sig();
        let model_ok = |c: usize| {
            shape
                .model
                .is_none_or(|m| sig(c).any_model || sig(c).models.contains(m))
        };
        if let Some(m) = shape.model
            && members(&model_ok) == 0
        {
            return PendingReason::NoWorkerServesModel {
                model: f.models.name(m).clone(),
            };
        }
        let tools_ok = |c: usize| model_ok(c) && sig(c).tools.is_superset(&shape.tools);
        if members(&tools_ok) == 0 {
            return PendingReason::NoWorkerHasTools {
                tools: shape
                    .tools
                    .iter()
                    .map(|t| f.tools.name(t).clone())
                    .collect(),
            };
        }
        let gpus_ok = |c: usize| tools_ok(c) && sig(c).gpus >= shape.gpus;
        if members(&gpus_ok) == 0 {
            return PendingReason::NoWorkerHasGpus { gpus: shape.gpus };
        }
        let size_ok = |c: usize| gpus_ok(c) && sig(c).cpu >= shape.cpu && sig(c).mem >= shape.mem;
        if members(&size_ok) == 0 {
            return PendingReason::NoWorkerLargeEnough {
                cpu: shape.cpu,
                mem: shape.mem,
            };
        }
        if let Some(cl) = shape.classification
            && members(&|c| ok.get(c).copied().unwrap_or(false)) == 0
        {
            return PendingReason::NoWorkerCleared {
                classification: f.classifications.name(cl).clone(),
            };
        }
        let placeable = |c: usize| ok.get(c).copied().unwrap_or(false) && self.zone_ok(zones, c);
        let total = members(&placeable);
        if total == 0 {
            return PendingReason::NoWorkerInAllowedLocalities;
        }
        let healthy: u32 = (0..f.classes.len())
            .filter(|&c| placeable(c))
            .map(|c| f.classes[c].by_load.len() as u32)
            .sum();
        if healthy == 0 {
            return PendingReason::NoHealthyWorker {
                model: shape.model.map(|m| f.models.name(m).clone()),
                unhealthy: total,
            };
        }
        PendingReason::AllBusy {
            eligible: healthy,
            cpu: shape.cpu,
            mem: shape.mem,
            gpus: shape.gpus,
        }
    }
}
