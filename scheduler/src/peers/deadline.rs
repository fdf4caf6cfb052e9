//! Earliest deadline first (`edf`) and least slack first (`lsf`), as the ERDOS scheduling
//! simulator runs them.
//!
//! Modelled on erdos-project/erdos-scheduling-simulator `schedulers/edf_scheduler.py` and
//! `schedulers/lsf_scheduler.py` (`LSFScheduler.schedule` and `slack`), non-preemptive:
//! - order: EDF by the task's deadline; LSF by its slack, `deadline - now - remaining time`.
//!   `now` is the same for every task of a pass, so LSF orders by `deadline - remaining
//!   time`, the latest time the task can start. A task's deadline is its job's (the task
//!   graph's) deadline: `deadlineSeconds` after submission, or the job's critical path when it
//!   has none (a deadline with no slack). Priorities and tenants are not looked at.
//! - placement: the first worker, in the fleet's order, that can accommodate the task
//!   (`WorkerPool.can_accomodate_task`).
//!
//! Left out: preemption (off by default in ERDOS too) and per-task deadlines derived from a
//! job's deadline along its DAG.

use super::JobFacts;
use crate::time::Timestamp;

/// When the job should be done.
pub(crate) fn absolute(job: &JobFacts) -> Timestamp {
    let relative = job.deadline_ms.unwrap_or(job.critical_ms);
    job.submitted.plus_ms(relative)
}

/// The latest time a task of `remaining_ms` can start and still meet its job's deadline.
pub(crate) fn latest_start(job: &JobFacts, remaining_ms: u64) -> Timestamp {
    Timestamp(absolute(job).millis().saturating_sub(remaining_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::queue_position;
    use crate::score::Strategy;

    fn job(submitted_s: u64, critical_s: u64, deadline_s: Option<u64>) -> JobFacts {
        JobFacts {
            submitted: Timestamp::from_secs(submitted_s),
            critical_ms: critical_s * 1000,
            deadline_ms: deadline_s.map(|d| d * 1000),
        }
    }

    #[test]
    fn edf_runs_the_later_job_first_when_its_deadline_is_earlier() {
        let early = job(0, 10, Some(600));
        let late = job(60, 10, Some(120));
        let at = Timestamp::from_secs(100);
        let pos = |j: &JobFacts| queue_position(Strategy::Edf, j, at, 10_000, 10_000);
        assert!(pos(&late) < pos(&early));
        // Arrival order, as kube-scheduler has it, would run the earlier job first.
        let kube = |j: &JobFacts| queue_position(Strategy::KubeScheduler, j, j.submitted, 0, 0);
        assert!(kube(&early) < kube(&late));
    }

    #[test]
    fn lsf_runs_a_long_task_before_a_short_one_with_the_same_deadline() {
        let j = job(0, 100, Some(200));
        let at = Timestamp::ZERO;
        let long = queue_position(Strategy::Lsf, &j, at, 0, 90_000);
        let short = queue_position(Strategy::Lsf, &j, at, 0, 5_000);
        assert!(long < short);
        // EDF cannot tell them apart.
        assert_eq!(
            queue_position(Strategy::Edf, &j, at, 0, 90_000),
            queue_position(Strategy::Edf, &j, at, 0, 5_000)
        );
    }

    #[test]
    fn a_job_without_a_deadline_is_due_at_the_end_of_its_critical_path() {
        assert_eq!(absolute(&job(10, 30, None)), Timestamp::from_secs(40));
    }
}
