//! DAG validation and the compact graph the scheduler walks.

use rustc_hash::FxHashMap;

use crate::api::{JobSpec, TaskKind, TaskSpec};
use crate::settings::Limits;
use crate::validate::{ValidationErrors, ValidationIssue};

/// A validated DAG over task indices (the order of `spec.tasks`), in compressed adjacency form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dag {
    parent_start: Vec<u32>,
    parents: Vec<u32>,
    child_start: Vec<u32>,
    children: Vec<u32>,
    topo: Vec<u32>,
}

impl Dag {
    pub fn len(&self) -> usize {
        self.topo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topo.is_empty()
    }

    pub fn parents(&self, task: u32) -> &[u32] {
        let t = task as usize;
        &self.parents[self.parent_start[t] as usize..self.parent_start[t + 1] as usize]
    }

    pub fn children(&self, task: u32) -> &[u32] {
        let t = task as usize;
        &self.children[self.child_start[t] as usize..self.child_start[t + 1] as usize]
    }

    pub fn edge_count(&self) -> usize {
        self.parents.len()
    }

    /// Task indices in an order where every task comes after its parents.
    pub fn topological_order(&self) -> &[u32] {
        &self.topo
    }

    /// Tasks that nothing depends on.
    pub fn sinks(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&t| self.children(t).is_empty())
    }

    /// Length of the longest path, where `cost(t)` is the time task `t` takes.
    pub fn critical_path(&self, mut cost: impl FnMut(u32) -> u64) -> u64 {
        let mut finish = vec![0u64; self.len()];
        let mut longest = 0;
        for &t in &self.topo {
            let start = self.parents(t).iter().map(|&p| finish[p as usize]).max();
            finish[t as usize] = start.unwrap_or(0) + cost(t);
            longest = longest.max(finish[t as usize]);
        }
        longest
    }

    /// The depth of each task: 0 for roots, else one more than its deepest parent.
    pub fn levels(&self) -> Vec<u32> {
        let mut level = vec![0u32; self.len()];
        for &t in &self.topo {
            level[t as usize] = self
                .parents(t)
                .iter()
                .map(|&p| level[p as usize] + 1)
                .max()
                .unwrap_or(0);
        }
        level
    }

    /// The peak demand of one level, summed with `weight` (1 for a task count, cpu for cpu...).
    /// Tasks of one level never depend on each other, so a level can run all at once; admission
    /// uses this as the job's DAG-aware peak width.
    pub fn peak_width(&self, mut weight: impl FnMut(u32) -> u64) -> u64 {
        let levels = self.levels();
        let mut sums: Vec<u64> = Vec::new();
        for (t, &l) in levels.iter().enumerate() {
            if sums.len() <= l as usize {
                sums.resize(l as usize + 1, 0);
            }
            sums[l as usize] += weight(t as u32);
        }
        sums.into_iter().max().unwrap_or(0)
    }
}

/// Checks a job and builds its DAG, reporting every problem at once.
pub fn validate(spec: &JobSpec, limits: &Limits) -> Result<Dag, ValidationErrors> {
    let mut issues = Vec::new();
    if spec.tenant.trim().is_empty() {
        issues.push(ValidationIssue::MissingTenant);
    }
    if let Some(t) = spec.timeout_seconds
        && (t == 0 || t > limits.max_timeout_seconds)
    {
        issues.push(ValidationIssue::InvalidJobTimeout {
            why: format!("{t}s is outside 1..={}s", limits.max_timeout_seconds),
        });
    }
    let tasks = &spec.tasks;
    if tasks.is_empty() {
        issues.push(ValidationIssue::EmptyJob);
        return Err(ValidationErrors(issues));
    }
    if tasks.len() > limits.max_tasks_per_job {
        issues.push(ValidationIssue::TooManyTasks {
            count: tasks.len(),
            limit: limits.max_tasks_per_job,
        });
    }

    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    index.reserve(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        if let Some(why) = id_problem(&task.id) {
            issues.push(ValidationIssue::InvalidTaskId {
                index: i,
                id: task.id.clone(),
                why,
            });
        }
        if let Some(&first) = index.get(task.id.as_str()) {
            issues.push(ValidationIssue::DuplicateTaskId {
                id: task.id.clone(),
                first: first as usize,
                index: i,
            });
        } else {
            index.insert(&task.id, i as u32);
        }
        check_task(task, limits, &mut issues);
    }

    // Edges as (parent, child), deduplicated.
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (d, dep) in spec.dependencies.iter().enumerate() {
        let Some(&child) = index.get(dep.task.as_str()) else {
            issues.push(ValidationIssue::UnknownTask {
                index: d,
                task: dep.task.clone(),
            });
            continue;
        };
        for parent in &dep.depends_on {
            match index.get(parent.as_str()) {
                None => issues.push(ValidationIssue::UnknownDependency {
                    index: d,
                    task: dep.task.clone(),
                    missing: parent.clone(),
                }),
                Some(&p) if p == child => issues.push(ValidationIssue::SelfDependency {
                    index: d,
                    task: dep.task.clone(),
                }),
                Some(&p) => edges.push((p, child)),
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    if edges.len() > limits.max_edges_per_job {
        issues.push(ValidationIssue::TooManyEdges {
            count: edges.len(),
            limit: limits.max_edges_per_job,
        });
    }

    let n = tasks.len();
    let dag = build(n, &edges);
    if dag.topo.len() < n {
        for path in cycles(n, &edges, &dag.topo) {
            let path = path.iter().map(|&t| tasks[t as usize].id.clone()).collect();
            issues.push(ValidationIssue::Cycle { path });
        }
    }
    if issues.is_empty() {
        Ok(dag)
    } else {
        Err(ValidationErrors(issues))
    }
}

fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("it is empty");
    }
    if id.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("use only lowercase letters, digits, '-', '_' and '.'");
    }
    None
}

fn check_task(task: &TaskSpec, limits: &Limits, issues: &mut Vec<ValidationIssue>) {
    let r = &task.resources;
    let mut bad = Vec::new();
    if r.cpu_millis == 0 || r.cpu_millis > limits.max_task_cpu_millis {
        bad.push(format!(
            "cpuMillis {} is outside 1..={}",
            r.cpu_millis, limits.max_task_cpu_millis
        ));
    }
    if r.memory_mib == 0 || r.memory_mib > limits.max_task_memory_mib {
        bad.push(format!(
            "memoryMib {} is outside 1..={}",
            r.memory_mib, limits.max_task_memory_mib
        ));
    }
    if r.gpus > limits.max_task_gpus {
        bad.push(format!(
            "gpus {} is over the limit of {}",
            r.gpus, limits.max_task_gpus
        ));
    }
    if !bad.is_empty() {
        issues.push(ValidationIssue::InvalidResources {
            task: task.id.clone(),
            why: bad.join("; "),
        });
    }
    if let Some(t) = task.timeout_seconds
        && (t == 0 || t > limits.max_timeout_seconds)
    {
        issues.push(ValidationIssue::InvalidTaskTimeout {
            task: task.id.clone(),
            why: format!("{t}s is outside 1..={}s", limits.max_timeout_seconds),
        });
    }
    let rp = &task.retry;
    let why = if rp.limit > limits.max_retries {
        Some(format!(
            "limit {} is over the maximum of {}",
            rp.limit, limits.max_retries
        ))
    } else if !rp.backoff_factor.is_finite() || rp.backoff_factor < 1.0 {
        Some(format!(
            "backoffFactor {} must be a number of at least 1",
            rp.backoff_factor
        ))
    } else if rp.max_backoff_ms < rp.initial_backoff_ms {
        Some(format!(
            "maxBackoffMs {} is below initialBackoffMs {}",
            rp.max_backoff_ms, rp.initial_backoff_ms
        ))
    } else {
        None
    };
    if let Some(why) = why {
        issues.push(ValidationIssue::InvalidRetry {
            task: task.id.clone(),
            why,
        });
    }
    if task.kind == TaskKind::Inference && task.model.as_deref().is_none_or(str::is_empty) {
        issues.push(ValidationIssue::InferenceWithoutModel {
            task: task.id.clone(),
        });
    }
}

/// Builds adjacency and a topological order (Kahn). Tasks on cycles are left out of the order.
fn build(n: usize, edges: &[(u32, u32)]) -> Dag {
    let mut parent_start = vec![0u32; n + 1];
    let mut child_start = vec![0u32; n + 1];
    for &(p, c) in edges {
        parent_start[c as usize + 1] += 1;
        child_start[p as usize + 1] += 1;
    }
    for i in 0..n {
        parent_start[i + 1] += parent_start[i];
        child_start[i + 1] += child_start[i];
    }
    let mut parents = vec![0u32; edges.len()];
    let mut children = vec![0u32; edges.len()];
    let mut pfill = parent_start.clone();
    let mut cfill = child_start.clone();
    for &(p, c) in edges {
        parents[pfill[c as usize] as usize] = p;
        pfill[c as usize] += 1;
        children[cfill[p as usize] as usize] = c;
        cfill[p as usize] += 1;
    }
    let mut indegree: Vec<u32> = (0..n)
        .map(|t| parent_start[t + 1] - parent_start[t])
        .collect();
    let mut topo: Vec<u32> = (0..n as u32)
        .filter(|&t| indegree[t as usize] == 0)
        .collect();
    let mut head = 0;
    while head < topo.len() {
        let t = topo[head] as usize;
        head += 1;
        for &c in &children[child_start[t] as usize..child_start[t + 1] as usize] {
            indegree[c as usize] -= 1;
            if indegree[c as usize] == 0 {
                topo.push(c);
            }
        }
    }
    Dag {
        parent_start,
        parents,
        child_start,
        children,
        topo,
    }
}

/// One cycle for each strongly connected component left over by Kahn's algorithm, each path
/// starting and ending at the component's first task.
fn cycles(n: usize, edges: &[(u32, u32)], topo: &[u32]) -> Vec<Vec<u32>> {
    let mut in_cycle_part = vec![true; n];
    for &t in topo {
        in_cycle_part[t as usize] = false;
    }
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(p, c) in edges {
        if in_cycle_part[p as usize] && in_cycle_part[c as usize] {
            adj[p as usize].push(c);
        }
    }
    let comp = scc(n, &adj, &in_cycle_part);
    let mut seen_comp = rustc_hash::FxHashSet::default();
    let mut out = Vec::new();
    for start in 0..n {
        if !in_cycle_part[start] || !seen_comp.insert(comp[start]) {
            continue;
        }
        // Breadth-first search inside the component for the shortest way back to `start`.
        let c = comp[start];
        let mut prev: FxHashMap<u32, u32> = FxHashMap::default();
        let mut queue = std::collections::VecDeque::from([start as u32]);
        let mut closing = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &v in &adj[u as usize] {
                if comp[v as usize] != c {
                    continue;
                }
                if v as usize == start {
                    closing = Some(u);
                    break 'bfs;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(v) {
                    e.insert(u);
                    queue.push_back(v);
                }
            }
        }
        let Some(mut u) = closing else { continue };
        let mut back = Vec::new();
        while u as usize != start {
            back.push(u);
            u = prev[&u];
        }
        back.reverse();
        let mut path = vec![start as u32];
        path.extend(back);
        path.push(start as u32);
        out.push(path);
    }
    out
}

/// Tarjan's strongly connected components, iterative so deep graphs cannot overflow the stack.
fn scc(n: usize, adj: &[Vec<u32>], include: &[bool]) -> Vec<u32> {
    const NONE: u32 = u32::MAX;
    let mut index = vec![NONE; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![NONE; n];
    let mut stack = Vec::new();
    let mut next = 0u32;
    let mut ncomp = 0u32;
    for root in 0..n {
        if !include[root] || index[root] != NONE {
            continue;
        }
        let mut work: Vec<(u32, usize)> = vec![(root as u32, 0)];
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            let v = v as usize;
            if *i == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v as u32);
                on_stack[v] = true;
            }
            if *i < adj[v].len() {
                let w = adj[v][*i] as usize;
                *i += 1;
                if index[w] == NONE {
                    work.push((w as u32, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent as usize] = low[parent as usize].min(low[v]);
            }
            if low[v] == index[v] {
                loop {
                    let w = stack.pop().expect("tarjan stack holds v") as usize;
                    on_stack[w] = false;
                    comp[w] = ncomp;
                    if w == v {
                        break;
                    }
                }
                ncomp += 1;
            }
        }
    }
    comp
}
