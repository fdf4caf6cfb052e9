//! Tenant policy: allow and deny rules on models and data classifications, and quotas.
//!
//! Deny wins over allow; an empty allow list allows whatever is not denied. Every verdict says
//! which rule decided it.

use std::fmt;

use crate::api::{JobSpec, PolicySpec, Quotas};

/// Matches `value` against a rule pattern: exact, `*` for anything, or a prefix ending in `*`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// A rule that refused a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub policy: String,
    pub task: String,
    /// `model` or `classification`.
    pub subject: &'static str,
    pub value: String,
    /// Such as `models.deny[1]`, or `models.allow` when nothing in the allow list matched.
    pub rule: String,
    pub pattern: Option<String>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Some(p) => write!(
                f,
                "task `{}`: {} `{}` is denied by policy `{}` rule {} (`{p}`); use another {} or ask for the policy to change",
                self.task, self.subject, self.value, self.policy, self.rule, self.subject
            ),
            None => write!(
                f,
                "task `{}`: {} `{}` is not in the allow list of policy `{}` ({}); use an allowed {}",
                self.task, self.subject, self.value, self.policy, self.rule, self.subject
            ),
        }
    }
}

/// Checks one value against a rule set. `Ok` names the rule that allowed it (or `default`).
pub fn evaluate(
    policy: &str,
    rules: &crate::api::RuleSet,
    field: &'static str,
    subject: &'static str,
    task: &str,
    value: &str,
) -> Result<String, Box<Denial>> {
    let deny = |rule: String, pattern: Option<String>| {
        Box::new(Denial {
            policy: policy.to_owned(),
            task: task.to_owned(),
            subject,
            value: value.to_owned(),
            rule,
            pattern,
        })
    };
    if let Some((i, p)) = rules
        .deny
        .iter()
        .enumerate()
        .find(|(_, p)| pattern_matches(p, value))
    {
        return Err(deny(format!("{field}.deny[{i}]"), Some(p.clone())));
    }
    if rules.allow.is_empty() {
        return Ok("default allow".into());
    }
    match rules.allow.iter().position(|p| pattern_matches(p, value)) {
        Some(i) => Ok(format!("{field}.allow[{i}]")),
        None => Err(deny(format!("{field}.allow"), None)),
    }
}

/// Every rule of `policy` that a job breaks, including its task count quota.
pub fn check_job(name: &str, policy: &PolicySpec, job: &JobSpec) -> Vec<String> {
    let mut out = Vec::new();
    for t in &job.tasks {
        if let Some(m) = &t.model
            && let Err(d) = evaluate(name, &policy.models, "models", "model", &t.id, m)
        {
            out.push(d.to_string());
        }
        if let Some(c) = &t.classification
            && let Err(d) = evaluate(
                name,
                &policy.classifications,
                "classifications",
                "classification",
                &t.id,
                c,
            )
        {
            out.push(d.to_string());
        }
    }
    if let Some(max) = policy.quotas.max_tasks_per_job
        && job.tasks.len() > max as usize
    {
        out.push(format!(
                "the job has {} tasks, over policy `{name}` quota maxTasksPerJob of {max}: split the job",
                job.tasks.len()
            ));
    }
    out
}

/// Resources a tenant holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub running_jobs: u32,
    pub running_tasks: u32,
    pub cpu_millis: u64,
    pub memory_mib: u64,
    pub gpus: u32,
}

impl Usage {
    /// One more attempt of this size is running.
    pub fn take(&mut self, cpu: u32, mem: u32, gpus: u32) {
        self.running_tasks += 1;
        self.cpu_millis += u64::from(cpu);
        self.memory_mib += u64::from(mem);
        self.gpus += gpus;
    }

    /// An attempt of this size has ended.
    pub fn give_back(&mut self, cpu: u32, mem: u32, gpus: u32) {
        self.running_tasks -= 1;
        self.cpu_millis -= u64::from(cpu);
        self.memory_mib -= u64::from(mem);
        self.gpus -= gpus;
    }
}

/// A quota that holds a task back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaBlock {
    RunningJobs { used: u32, max: u32 },
    RunningTasks { used: u32, max: u32 },
    Cpu { used: u64, max: u64, need: u32 },
    Gpus { used: u32, max: u32, need: u32 },
}

impl fmt::Display for QuotaBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaBlock::RunningJobs { used, max } => {
                write!(f, "tenant quota: {used}/{max} running jobs")
            }
            QuotaBlock::RunningTasks { used, max } => {
                write!(f, "tenant quota: {used}/{max} running tasks")
            }
            QuotaBlock::Cpu { used, max, need } => {
                write!(
                    f,
                    "tenant quota: {used}m of {max}m cpu in use, task needs {need}m"
                )
            }
            QuotaBlock::Gpus { used, max, need } => {
                write!(
                    f,
                    "tenant quota: {used}/{max} gpus in use, task needs {need}"
                )
            }
        }
    }
}

/// Whether one more task of this size fits the tenant's quotas.
pub fn task_fits(q: &Quotas, used: &Usage, cpu: u32, gpus: u32) -> Result<(), QuotaBlock> {
    if let Some(max) = q.max_running_tasks
        && used.running_tasks >= max
    {
        return Err(QuotaBlock::RunningTasks {
            used: used.running_tasks,
            max,
        });
    }
    if let Some(max) = q.max_cpu_millis
        && used.cpu_millis + u64::from(cpu) > max
    {
        return Err(QuotaBlock::Cpu {
            used: used.cpu_millis,
            max,
            need: cpu,
        });
    }
    if let Some(max) = q.max_gpus
        && gpus > 0
        && used.gpus + gpus > max
    {
        return Err(QuotaBlock::Gpus {
            used: used.gpus,
            max,
            need: gpus,
        });
    }
    Ok(())
}

/// Whether the tenant may start one more job.
pub fn job_fits(q: &Quotas, used: &Usage) -> Result<(), QuotaBlock> {
    match q.max_running_jobs {
        Some(max) if used.running_jobs >= max => Err(QuotaBlock::RunningJobs {
            used: used.running_jobs,
            max,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RuleSet;

    fn rules(allow: &[&str], deny: &[&str]) -> RuleSet {
        RuleSet {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn deny_wins_over_allow_and_names_the_rule() {
        let r = rules(&["llama-*"], &["llama-70b*"]);
        let d = evaluate("p", &r, "models", "model", "t", "llama-70b-q4").unwrap_err();
        assert_eq!(d.rule, "models.deny[0]");
        assert!(
            d.to_string()
                .contains("denied by policy `p` rule models.deny[0] (`llama-70b*`)"),
            "{d}"
        );
        assert_eq!(
            evaluate("p", &r, "models", "model", "t", "llama-8b"),
            Ok("models.allow[0]".into())
        );
    }

    #[test]
    fn a_value_outside_a_non_empty_allow_list_is_denied() {
        let r = rules(&["public", "internal"], &[]);
        let d = evaluate("p", &r, "classifications", "classification", "t", "secret").unwrap_err();
        assert!(d.to_string().contains("not in the allow list"), "{d}");
        assert_eq!(
            evaluate("p", &rules(&[], &[]), "models", "model", "t", "x"),
            Ok("default allow".into())
        );
    }

    #[test]
    fn quota_reasons_say_what_is_used_and_what_is_allowed() {
        let q = Quotas {
            max_running_tasks: Some(40),
            ..Quotas::default()
        };
        let used = Usage {
            running_tasks: 40,
            ..Usage::default()
        };
        assert_eq!(
            task_fits(&q, &used, 100, 0).unwrap_err().to_string(),
            "tenant quota: 40/40 running tasks"
        );
        let q = Quotas {
            max_gpus: Some(2),
            ..Quotas::default()
        };
        let used = Usage {
            gpus: 2,
            ..Usage::default()
        };
        assert!(
            task_fits(&q, &used, 100, 0).is_ok(),
            "a CPU task is not held back by the GPU quota"
        );
        assert!(task_fits(&q, &used, 100, 1).is_err());
    }
}
