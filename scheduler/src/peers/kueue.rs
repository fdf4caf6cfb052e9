//! Kueue in front of kube-scheduler.
//!
//! Modelled on kubernetes-sigs/kueue:
//! - one ClusterQueue per tenant whose nominal quota is the tenant's `maxCpuMillis`,
//!   `maxGpus` and `maxRunningTasks` (as the `pods` resource); no cohort, so no borrowing.
//! - admission (`pkg/scheduler/scheduler.go` `schedule`, `pkg/cache/clusterqueue.go` fit
//!   checks): a workload is admitted only when its whole request fits what the queue's admitted
//!   workloads leave of the quota, and it holds that quota until it finishes. A SPLAI job is
//!   one workload whose request is the sum of its tasks' requests (one pod set per task),
//!   which is what Kueue reserves for a job it cannot see inside of.
//! - order: `BestEffortFIFO` (`pkg/queue/cluster_queue.go`, the default queueing strategy):
//!   higher priority first, then the older workload; a workload that does not fit does not
//!   block the ones behind it.
//! - placement of admitted jobs' tasks: kube-scheduler ([`crate::peers::kube`]).
//!
//! Left out: cohorts, borrowing and preemption, flavors (every worker is one flavor), partial
//! admission, and `waitForPodsReady`. A job whose total request exceeds its tenant's quota is
//! never admitted, as Kueue leaves such a workload inadmissible; the tenant's
//! `maxRunningJobs`, which Kueue cannot express, still applies as it does for every policy.

use crate::api::Quotas;
use crate::policy::Usage;

/// Why a workload is not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inadmissible {
    /// It fits the quota, but not next to the workloads admitted now.
    Waiting {
        resource: &'static str,
        reserved: u64,
        need: u64,
        quota: u64,
    },
    /// It needs more than the whole quota.
    Never {
        resource: &'static str,
        need: u64,
        quota: u64,
    },
}

impl std::fmt::Display for Inadmissible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Inadmissible::Waiting {
                resource,
                reserved,
                need,
                quota,
            } => write!(
                f,
                "kueue: the job needs {need} {resource}, and admitted jobs hold {reserved} of the tenant's {quota}"
            ),
            Inadmissible::Never {
                resource,
                need,
                quota,
            } => write!(
                f,
                "kueue: the job needs {need} {resource}, more than the tenant's whole quota of {quota}; it can never be admitted"
            ),
        }
    }
}

/// Whether a job needing `need` (cpu, gpus and tasks as pods) fits next to `reserved`.
pub(crate) fn admits(quotas: &Quotas, reserved: &Usage, need: &Usage) -> Result<(), Inadmissible> {
    let checks = [
        (
            "pods",
            quotas.max_running_tasks.map(u64::from),
            u64::from(reserved.running_tasks),
            u64::from(need.running_tasks),
        ),
        (
            "millicpu",
            quotas.max_cpu_millis,
            reserved.cpu_millis,
            need.cpu_millis,
        ),
        (
            "gpus",
            quotas.max_gpus.map(u64::from),
            u64::from(reserved.gpus),
            u64::from(need.gpus),
        ),
    ];
    for (resource, quota, reserved, need) in checks {
        let Some(quota) = quota else { continue };
        if need > quota {
            return Err(Inadmissible::Never {
                resource,
                need,
                quota,
            });
        }
        if reserved + need > quota {
            return Err(Inadmissible::Waiting {
                resource,
                reserved,
                need,
                quota,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(tasks: u32, cpu: u64) -> Usage {
        Usage {
            running_tasks: tasks,
            cpu_millis: cpu,
            ..Usage::default()
        }
    }

    #[test]
    fn kueue_holds_a_whole_job_back_until_its_total_request_fits_the_quota() {
        let quotas = Quotas {
            max_running_tasks: Some(6),
            ..Quotas::default()
        };
        // Two tasks run of an admitted 4-task job: a per-task quota would let 4 more start,
        // but Kueue has reserved all 4 and a new 4-task job waits whole.
        let reserved = usage(4, 0);
        assert!(matches!(
            admits(&quotas, &reserved, &usage(4, 0)),
            Err(Inadmissible::Waiting {
                resource: "pods",
                ..
            })
        ));
        assert_eq!(admits(&quotas, &reserved, &usage(2, 0)), Ok(()));
    }

    #[test]
    fn kueue_never_admits_a_job_larger_than_the_quota() {
        let quotas = Quotas {
            max_cpu_millis: Some(8000),
            ..Quotas::default()
        };
        assert!(matches!(
            admits(&quotas, &Usage::default(), &usage(3, 9000)),
            Err(Inadmissible::Never { .. })
        ));
    }
}
