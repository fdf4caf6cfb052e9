//! The worker fleet: registration, health from heartbeats, free capacity, warm models, and the
//! indices placement reads.
//!
//! Workers with identical static capabilities share a *class*. Placement checks a task's hard
//! constraints once per class instead of once per worker, and each class keeps its healthy
//! members ordered by load, plus one ordered set per warm model, so the best candidates of a
//! class are found without scanning it.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::api::{Capabilities, Health, Utilization};
use crate::intern::{BitSet, Interner};
use crate::time::Timestamp;

pub(crate) type WorkerId = u32;

/// A worker's place in a class's load order.
pub(crate) type LoadKey = (u32, u64, WorkerId);

/// A worker's place in a class's free-capacity order: (free GPUs, free cpu, tie key, worker).
pub(crate) type FreeKey = (u32, u32, u64, WorkerId);

/// Static capabilities, with strings interned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClassSig {
    pub cpu: u32,
    pub mem: u32,
    pub gpus: u32,
    pub any_model: bool,
    pub models: BitSet,
    pub tools: BitSet,
    pub zone: Option<u32>,
    /// Empty: cleared for any classification.
    pub classifications: BitSet,
    pub speed_bits: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Class {
    pub sig: Option<ClassSig>,
    /// Registered members, healthy or not.
    pub members: u32,
    /// Healthy members as (active attempts, tie key, worker): least loaded first, and among
    /// equals in the order the score's tie-break prefers.
    pub by_load: BTreeSet<LoadKey>,
    /// Healthy members, fewest free GPUs then least free cpu first: for a task that packs (see
    /// `score::ScoreTerms::packing`), the tightest fits by GPUs and cpu come first (memory is
    /// not in the order).
    pub by_free: BTreeSet<FreeKey>,
    /// Healthy members with a model warm, per model.
    pub warm: FxHashMap<u32, BTreeSet<LoadKey>>,
}

impl Class {
    pub fn sig(&self) -> &ClassSig {
        self.sig.as_ref().expect("a class always has a signature")
    }
}

#[derive(Debug)]
pub(crate) struct WorkerRt {
    pub name: Arc<str>,
    /// Breaks ties between equal scores: a stable hash of the name.
    pub tie_key: u64,
    pub caps: Capabilities,
    pub class: u32,
    pub health: Health,
    pub registered: bool,
    pub incarnation: u64,
    pub last_heartbeat: Timestamp,
    /// When the pending health check fires; earlier-armed checks that differ are void.
    pub check_at: Option<Timestamp>,
    pub free_cpu: u32,
    pub free_mem: u32,
    pub free_gpus: u32,
    /// Attempts assigned here and not yet ended, as (job, task).
    pub active: Vec<(u32, u32)>,
    pub warm: BitSet,
    /// The most models the agent has reported loaded at once: what its cache holds.
    pub slots_seen: u32,
    pub speed: f64,
    pub utilization: Utilization,
    pub reported_queue: u32,
}

impl WorkerRt {
    pub fn depth(&self) -> u32 {
        self.active.len() as u32
    }

    pub fn eligible(&self) -> bool {
        self.registered && self.health == Health::Healthy
    }

    pub fn fits(&self, cpu: u32, mem: u32, gpus: u32) -> bool {
        self.free_cpu >= cpu && self.free_mem >= mem && self.free_gpus >= gpus
    }
}

#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub workers: Vec<WorkerRt>,
    pub by_name: FxHashMap<Arc<str>, WorkerId>,
    pub classes: Vec<Class>,
    class_ids: FxHashMap<ClassSig, u32>,
    pub models: Interner,
    pub tools: Interner,
    pub zones: Interner,
    pub classifications: Interner,
    /// Capacity of registered, non-lost workers: the denominators of tenant shares.
    pub total_cpu: u64,
    pub total_mem: u64,
    pub total_gpus: u64,
    /// Bumped whenever capacity, health, warm models or membership change: a bucket that found
    /// no worker at one epoch cannot find one again until the epoch moves.
    pub epoch: u64,
}

impl Fleet {
    pub fn id(&self, name: &str) -> Option<WorkerId> {
        self.by_name.get(name).copied()
    }

    /// Adds a worker or replaces its capabilities. Returns its id and whether it is new.
    pub fn upsert(&mut self, name: &str, caps: Capabilities, now: Timestamp) -> (WorkerId, bool) {
        self.epoch += 1;
        let sig = self.signature(&caps);
        let class = match self.class_ids.get(&sig) {
            Some(&c) => c,
            None => {
                let c = self.classes.len() as u32;
                self.classes.push(Class {
                    sig: Some(sig.clone()),
                    ..Class::default()
                });
                self.class_ids.insert(sig, c);
                c
            }
        };
        if let Some(id) = self.id(name) {
            self.unindex(id);
            self.uncount(id);
            let old = &self.workers[id as usize];
            if old.registered {
                self.classes[old.class as usize].members -= 1;
            }
            self.classes[class as usize].members += 1;
            let w = &mut self.workers[id as usize];
            // Keep what is reserved: capacity shrinks by the same amount in use.
            let used = (
                w.caps.cpu_millis - w.free_cpu,
                w.caps.memory_mib - w.free_mem,
                w.caps.gpus - w.free_gpus,
            );
            w.free_cpu = caps.cpu_millis.saturating_sub(used.0);
            w.free_mem = caps.memory_mib.saturating_sub(used.1);
            w.free_gpus = caps.gpus.saturating_sub(used.2);
            w.speed = caps.speed_factor.max(0.01);
            w.caps = caps;
            w.class = class;
            w.registered = true;
            self.count(id);
            self.index(id);
            return (id, false);
        }
        let id = self.workers.len() as WorkerId;
        let name: Arc<str> = name.into();
        self.workers.push(WorkerRt {
            tie_key: crate::intern::stable_hash(&[name.as_bytes()]),
            name: name.clone(),
            class,
            health: Health::Unknown,
            registered: true,
            incarnation: 0,
            last_heartbeat: now,
            check_at: None,
            free_cpu: caps.cpu_millis,
            free_mem: caps.memory_mib,
            free_gpus: caps.gpus,
            active: Vec::new(),
            warm: BitSet::default(),
            slots_seen: 0,
            speed: caps.speed_factor.max(0.01),
            utilization: Utilization::default(),
            reported_queue: 0,
            caps,
        });
        self.by_name.insert(name, id);
        self.classes[class as usize].members += 1;
        self.count(id);
        (id, true)
    }

    fn signature(&mut self, caps: &Capabilities) -> ClassSig {
        let mut any_model = false;
        let mut models = BitSet::default();
        for m in &caps.models {
            if m == "*" {
                any_model = true;
            } else {
                models.insert(self.models.intern(m));
            }
        }
        ClassSig {
            cpu: caps.cpu_millis,
            mem: caps.memory_mib,
            gpus: caps.gpus,
            any_model,
            models,
            tools: BitSet::from_ids(
                caps.tools
                    .iter()
                    .map(|t| self.tools.intern(t))
                    .collect::<Vec<_>>(),
            ),
            zone: caps.locality.as_deref().map(|z| self.zones.intern(z)),
            classifications: BitSet::from_ids(
                caps.classifications
                    .iter()
                    .map(|c| self.classifications.intern(c))
                    .collect::<Vec<_>>(),
            ),
            speed_bits: caps.speed_factor.to_bits(),
        }
    }

    fn count(&mut self, id: WorkerId) {
        let w = &self.workers[id as usize];
        if w.registered && w.health != Health::Lost {
            self.total_cpu += u64::from(w.caps.cpu_millis);
            self.total_mem += u64::from(w.caps.memory_mib);
            self.total_gpus += u64::from(w.caps.gpus);
        }
    }

    fn uncount(&mut self, id: WorkerId) {
        let w = &self.workers[id as usize];
        if w.registered && w.health != Health::Lost {
            self.total_cpu -= u64::from(w.caps.cpu_millis);
            self.total_mem -= u64::from(w.caps.memory_mib);
            self.total_gpus -= u64::from(w.caps.gpus);
        }
    }

    /// Removes the worker from its class's indices. Call before changing its depth, free
    /// capacity, warm set, health or class, then call `index`.
    pub fn unindex(&mut self, id: WorkerId) {
        let w = &self.workers[id as usize];
        if !w.eligible() {
            return;
        }
        let key = (w.depth(), w.tie_key, id);
        let free = (w.free_gpus, w.free_cpu, w.tie_key, id);
        let class = &mut self.classes[w.class as usize];
        class.by_load.remove(&key);
        class.by_free.remove(&free);
        for m in w.warm.iter() {
            if let Some(set) = class.warm.get_mut(&m) {
                set.remove(&key);
            }
        }
    }

    pub fn index(&mut self, id: WorkerId) {
        let w = &self.workers[id as usize];
        if !w.eligible() {
            return;
        }
        let key = (w.depth(), w.tie_key, id);
        let free = (w.free_gpus, w.free_cpu, w.tie_key, id);
        let class = &mut self.classes[w.class as usize];
        class.by_load.insert(key);
        class.by_free.insert(free);
        for m in w.warm.iter() {
            class.warm.entry(m).or_default().insert(key);
        }
    }

    pub fn set_health(&mut self, id: WorkerId, health: Health) -> Health {
        let old = self.workers[id as usize].health;
        if old != health {
            self.epoch += 1;
            self.unindex(id);
            self.uncount(id);
            self.workers[id as usize].health = health;
            self.count(id);
            self.index(id);
        }
        old
    }

    pub fn deregister(&mut self, id: WorkerId) {
        self.epoch += 1;
        self.unindex(id);
        self.uncount(id);
        let w = &mut self.workers[id as usize];
        if w.registered {
            w.registered = false;
            self.classes[w.class as usize].members -= 1;
        }
    }

    /// Replaces the warm set with what the agent reports.
    pub fn set_warm(&mut self, id: WorkerId, models: &[String]) {
        let warm = BitSet::from_ids(
            models
                .iter()
                .map(|m| self.models.intern(m))
                .collect::<Vec<_>>(),
        );
        if self.workers[id as usize].warm != warm {
            self.epoch += 1;
            self.unindex(id);
            self.workers[id as usize].warm = warm;
            self.index(id);
        }
    }

    pub fn reserve(
        &mut self,
        id: WorkerId,
        attempt: (u32, u32),
        cpu: u32,
        mem: u32,
        gpus: u32,
        model: Option<u32>,
    ) {
        self.unindex(id);
        let w = &mut self.workers[id as usize];
        w.free_cpu -= cpu;
        w.free_mem -= mem;
        w.free_gpus -= gpus;
        w.active.push(attempt);
        if let Some(m) = model {
            // The agent loads the model for this task; its next heartbeat confirms or corrects.
            w.warm.insert(m);
        }
        self.index(id);
    }

    pub fn release(&mut self, id: WorkerId, attempt: (u32, u32), cpu: u32, mem: u32, gpus: u32) {
        self.epoch += 1;
        self.unindex(id);
        let w = &mut self.workers[id as usize];
        if let Some(pos) = w.active.iter().position(|&a| a == attempt) {
            w.active.swap_remove(pos);
            w.free_cpu += cpu;
            w.free_mem += mem;
            w.free_gpus += gpus;
        }
        self.index(id);
    }

    pub fn observe_speed(&mut self, id: WorkerId, observed: f64, smoothing: f64) {
        let w = &mut self.workers[id as usize];
        let observed = observed.clamp(0.05, 20.0);
        w.speed = (1.0 - smoothing) * w.speed + smoothing * observed;
    }
}
