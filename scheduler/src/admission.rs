//! Admission: whether a job may run at all, and whether a policy or a route is well formed.
//!
//! The same functions decide in the core (when a job is submitted) and in the operator's
//! admission webhook (before the API server stores anything), so a user reads the same message
//! wherever a job is refused. Waiting for quota at run time is not refusal: a job that could fit
//! is admitted and waits (see `policy::job_fits`).

use std::collections::BTreeMap;
use std::fmt;

use crate::api::{JobSpec, ModelRouteSpec, PolicySpec, ResolvedRoute, TaskKind};
use crate::dag::Dag;
use crate::policy;
use crate::route::{self, RouteQuery};
use crate::settings::Limits;

/// Why a job is refused: a reason usable as a condition or metric label, and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// `ValidationFailed`, `PolicyNotFound`, `PolicyDenied`, `QuotaExceeded` or `NoModelRoute`.
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}

/// What an admitted job needs to run: its DAG, whether the planner wrote its tasks, and each
/// task's model route (in task order; `None` for tasks that are not inference).
#[derive(Debug)]
pub struct Admitted {
    pub dag: Dag,
    pub planned: bool,
    pub routes: Vec<Option<ResolvedRoute>>,
}

fn reject(reason: &'static str, message: String) -> Rejection {
    Rejection { reason, message }
}

/// The policy that governs a tenant without `policyRef`: its own, else the `*` policy.
pub fn tenant_policy<'a>(
    policies: &'a BTreeMap<String, PolicySpec>,
    tenant: &str,
) -> Option<(&'a String, &'a PolicySpec)> {
    policies
        .iter()
        .find(|(_, p)| p.tenant == tenant)
        .or_else(|| policies.iter().find(|(_, p)| p.tenant == "*"))
}

/// The policy that governs `spec`: the one it names, or its tenant's.
pub fn policy_for<'a>(
    policies: &'a BTreeMap<String, PolicySpec>,
    spec: &JobSpec,
) -> Result<Option<(&'a String, &'a PolicySpec)>, Rejection> {
    let Some(name) = &spec.policy_ref else {
        return Ok(tenant_policy(policies, &spec.tenant));
    };
    match policies.get_key_value(name) {
        Some((n, p)) if p.tenant == spec.tenant || p.tenant == "*" => Ok(Some((n, p))),
        Some((_, p)) => Err(reject(
            "PolicyDenied",
            format!(
                "policy `{name}` governs tenant `{}`, not `{}`: reference a policy of your own tenant",
                p.tenant, spec.tenant
            ),
        )),
        None => Err(reject(
            "PolicyNotFound",
            format!("policy `{name}` does not exist: create it or drop spec.policyRef"),
        )),
    }
}

/// Admits a job: expands its plan (writing `spec.tasks`), validates its DAG, checks it against
/// its policy's rules, and resolves every inference task's route.
pub fn admit(
    spec: &mut JobSpec,
    policies: &BTreeMap<String, PolicySpec>,
    routes: &BTreeMap<String, ModelRouteSpec>,
    limits: &Limits,
) -> Result<Admitted, Rejection> {
    let planned = crate::plan::expand_into(spec, limits.max_tasks_per_job)
        .map_err(|e| reject("ValidationFailed", e.to_string()))?;
    let dag = crate::dag::validate(spec, limits)
        .map_err(|e| reject("ValidationFailed", e.to_string()))?;
    if let Some((name, p)) = policy_for(policies, spec)? {
        let denials = policy::check_job(name, p, spec);
        if !denials.is_empty() {
            return Err(reject("PolicyDenied", denials.join("; ")));
        }
    }
    let mut resolved = Vec::with_capacity(spec.tasks.len());
    let mut unrouted = Vec::new();
    for t in &spec.tasks {
        if routes.is_empty() || t.kind != TaskKind::Inference {
            resolved.push(None);
            continue;
        }
        let q = RouteQuery {
            tenant: &spec.tenant,
            model: t.model.as_deref().unwrap_or_default(),
            interaction_class: t.interaction_class,
            reasoning_required: t.reasoning_required,
            classification: t.classification.as_deref(),
        };
        match route::resolve(routes.iter().map(|(n, r)| (n.as_str(), r)), &q) {
            Ok(r) => resolved.push(Some(r)),
            Err(e) => {
                resolved.push(None);
                unrouted.push(format!("task `{}`: {e}", t.id));
            }
        }
    }
    if !unrouted.is_empty() {
        return Err(reject("NoModelRoute", unrouted.join("; ")));
    }
    Ok(Admitted {
        dag,
        planned,
        routes: resolved,
    })
}

/// The most tasks of a job that can run at once: the widest level of its DAG, where a task's
/// level is the length of the longest chain of parents above it. Tasks on one level never depend
/// on each other, so this is a set that can all run together (a lower bound on the widest such
/// set, exact for chains, fan-outs, map-reduce and layered DAGs).
pub fn peak_width(dag: &Dag) -> usize {
    let n = dag.len();
    let mut level = vec![0usize; n];
    let mut widths: Vec<usize> = Vec::new();
    for &t in dag.topological_order() {
        let l = dag
            .parents(t)
            .iter()
            .map(|&p| level[p as usize] + 1)
            .max()
            .unwrap_or(0);
        level[t as usize] = l;
        if widths.len() <= l {
            widths.resize(l + 1, 0);
        }
        widths[l] += 1;
    }
    widths.into_iter().max().unwrap_or(0)
}

/// Quotas an admitted job can never meet, whatever else runs: a task larger than the tenant's
/// cpu or gpu quota would wait forever, so it is refused instead. A job whose peak width is over
/// `maxRunningTasks` is admitted: it runs, with fewer tasks at once.
pub fn quota_rejection(
    spec: &JobSpec,
    policy: Option<(&String, &PolicySpec)>,
) -> Result<(), Rejection> {
    let Some((name, p)) = policy else {
        return Ok(());
    };
    let q = &p.quotas;
    let mut issues = Vec::new();
    if q.max_running_jobs == Some(0) {
        issues.push(format!(
            "policy `{name}` allows tenant `{}` no running jobs (maxRunningJobs: 0): raise the quota",
            spec.tenant
        ));
    }
    for t in &spec.tasks {
        if let Some(max) = q.max_cpu_millis
            && u64::from(t.resources.cpu_millis) > max
        {
            issues.push(format!(
                "task `{}` needs {} cpu millis, over policy `{name}` quota maxCpuMillis of {max}: ask for less cpu or raise the quota",
                t.id, t.resources.cpu_millis
            ));
        }
        if let Some(max) = q.max_gpus
            && t.resources.gpus > max
        {
            issues.push(format!(
                "task `{}` needs {} gpus, over policy `{name}` quota maxGpus of {max}: ask for fewer gpus or raise the quota",
                t.id, t.resources.gpus
            ));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(reject("QuotaExceeded", issues.join("; ")))
    }
}

/// Why an admitted job will wait, for the person who submits it: its peak width against
/// `maxRunningTasks`, and the tenant's `running_jobs` (counted by the caller) against
/// `maxRunningJobs`.
pub fn wait_warnings(
    name: &str,
    policy: &PolicySpec,
    tenant: &str,
    width: usize,
    running_jobs: Option<usize>,
) -> Vec<String> {
    let q = &policy.quotas;
    let mut out = Vec::new();
    if let Some(max) = q.max_running_tasks
        && width > max as usize
    {
        out.push(format!(
            "up to {width} tasks can run at once, over policy `{name}` quota maxRunningTasks of {max}: the job runs {max} at a time"
        ));
    }
    if let (Some(max), Some(running)) = (q.max_running_jobs, running_jobs)
        && running >= max as usize
    {
        out.push(format!(
            "tenant `{tenant}` already runs {running} jobs, policy `{name}` quota maxRunningJobs is {max}: the job waits in the queue until one ends"
        ));
    }
    out
}

/// What is wrong with a policy, one message per problem; empty when it is well formed.
pub fn review_policy(spec: &PolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.tenant.trim().is_empty() {
        out.push("spec.tenant is empty: name the tenant the policy governs, or `*`".into());
    }
    for (field, rules) in [
        ("models", &spec.models),
        ("classifications", &spec.classifications),
    ] {
        for (i, a) in rules.allow.iter().enumerate() {
            if let Some(j) = rules.deny.iter().position(|d| d == a) {
                out.push(format!(
                    "spec.{field}.allow[{i}] and spec.{field}.deny[{j}] are both `{a}`: deny wins, so the allow rule does nothing; remove one"
                ));
            }
        }
        for (kind, list) in [("allow", &rules.allow), ("deny", &rules.deny)] {
            for (i, p) in list.iter().enumerate() {
                if p.is_empty() || p[..p.len() - 1].contains('*') {
                    out.push(format!(
                        "spec.{field}.{kind}[{i}] `{p}` is not a pattern: use a name, or a prefix ending in one `*`"
                    ));
                }
            }
        }
    }
    out
}

/// What is wrong with a route, given the other routes of its namespace; empty when it is well
/// formed.
pub fn review_route<'a>(
    name: &str,
    spec: &ModelRouteSpec,
    others: impl IntoIterator<Item = (&'a str, &'a ModelRouteSpec)>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(why) = check_endpoint(&spec.endpoint) {
        out.push(format!(
            "spec.endpoint `{}` {why}: give a URL such as http://ollama.splai-system:11434",
            spec.endpoint
        ));
    }
    for (other, o) in others {
        if other == name {
            continue;
        }
        if o.priority == spec.priority {
            out.push(format!(
                "spec.priority {} is already taken by route `{other}`: routes are tried by priority, so give each a distinct one",
                spec.priority
            ));
        }
        if o.default && spec.default {
            out.push(format!(
                "route `{other}` is already the default: only one route may set `default: true`"
            ));
        }
    }
    out
}

/// `scheme://host[:port][/path]` with an http or https scheme.
fn check_endpoint(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("does not start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err("has no host");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("has a port that is not a number from 1 to 65535");
    }
    Ok(())
}
