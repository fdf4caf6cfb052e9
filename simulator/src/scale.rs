//! Time-scaling a scenario: every duration and instant in it multiplied by one factor, so that a
//! 20-minute scenario can run for real in a minute (factor 1/20) with the same shape: arrivals,
//! task and model-load times, heartbeats, the core's health thresholds and timers, and faults.
//!
//! Fields counted in whole seconds (timeouts, deadlines, the horizon) are rounded up, and never
//! to 0, so a scaled timeout can fire slightly later than the exact product. Everything in
//! milliseconds is rounded to the nearest millisecond, at least 1 where it was above 0.

use splai_scheduler::Settings;
use splai_scheduler::api::{JobSpec, RetryPolicy, TaskSpec};

use crate::scenario::{FaultKind, Scenario};

/// The scenario with every time in it multiplied by `factor` (> 0).
pub fn time_scaled(sc: &Scenario, factor: f64) -> Scenario {
    assert!(
        factor.is_finite() && factor > 0.0,
        "a time scale must be above 0, got {factor}"
    );
    let ms = |v: u64| scale_ms(v, factor);
    let mut out = sc.clone();
    out.horizon_seconds = scale_s(sc.horizon_seconds, factor);
    out.heartbeat_interval_ms = ms(sc.heartbeat_interval_ms);
    out.network_latency_ms = ms(sc.network_latency_ms);
    out.submit_latency_ms = ms(sc.submit_latency_ms);
    scale_settings(&mut out.settings, factor);
    out.cold_start.fixed_ms = ms(sc.cold_start.fixed_ms);
    for s in &mut out.cold_start.samples_ms {
        *s = ms(*s);
    }
    for j in &mut out.workload.jobs {
        j.at_ms = ms(j.at_ms);
        for d in j.durations_ms.values_mut() {
            *d = ms(*d);
        }
        scale_job(&mut j.spec, factor);
    }
    for g in &mut out.workload.generators {
        g.start_ms = ms(g.start_ms);
        g.interval_ms = ms(g.interval_ms);
        g.jitter_ms = ms(g.jitter_ms);
        scale_job(&mut g.template, factor);
    }
    out.checks.max_jct_p95_s = sc.checks.max_jct_p95_s.map(|s| s * factor);
    for f in &mut out.faults {
        f.at_ms = ms(f.at_ms);
        f.duration_ms = f.duration_ms.map(ms);
        if let FaultKind::Network {
            extra_latency_ms, ..
        } = &mut f.kind
        {
            *extra_latency_ms = ms(*extra_latency_ms);
        }
    }
    out
}

fn scale_ms(v: u64, factor: f64) -> u64 {
    if v == 0 {
        0
    } else {
        ((v as f64 * factor).round() as u64).max(1)
    }
}

fn scale_s(v: u64, factor: f64) -> u64 {
    if v == 0 {
        0
    } else {
        ((v as f64 * factor).ceil() as u64).max(1)
    }
}

fn scale_settings(s: &mut Settings, factor: f64) {
    let ms = |v: u64| scale_ms(v, factor);
    s.stale_after_ms = ms(s.stale_after_ms);
    s.lost_after_ms = ms(s.lost_after_ms);
    s.assignment_grace_ms = ms(s.assignment_grace_ms);
    s.aging_interval_ms = ms(s.aging_interval_ms);
    s.latency_half_ms *= factor;
    s.default_duration_ms = ms(s.default_duration_ms);
    s.model_load_ms = ms(s.model_load_ms);
}

fn scale_job(spec: &mut JobSpec, factor: f64) {
    spec.timeout_seconds = spec.timeout_seconds.map(|v| scale_s(v, factor));
    spec.deadline_seconds = spec.deadline_seconds.map(|v| scale_s(v, factor));
    for t in &mut spec.tasks {
        scale_task(t, factor);
    }
    if let Some(plan) = spec.plan.as_mut() {
        scale_task(&mut plan.template, factor);
        if let Some(r) = plan.reduce.as_mut() {
            scale_task(r, factor);
        }
    }
}

fn scale_task(t: &mut TaskSpec, factor: f64) {
    t.timeout_seconds = t.timeout_seconds.map(|v| scale_s(v, factor));
    t.expected_duration_ms = t.expected_duration_ms.map(|v| scale_ms(v, factor));
    let RetryPolicy {
        initial_backoff_ms,
        max_backoff_ms,
        ..
    } = &mut t.retry;
    *initial_backoff_ms = scale_ms(*initial_backoff_ms, factor);
    *max_backoff_ms = scale_ms(*max_backoff_ms, factor);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name: t
horizonSeconds: 100
heartbeatIntervalMs: 5000
settings: { staleAfterMs: 15000, lostAfterMs: 60000 }
checks: { maxJctP95S: 200 }
coldStart: { fixedMs: 20000, samplesMs: [1000, 3000] }
fleet: [{ group: g, count: 2, capabilities: { cpuMillis: 1000, memoryMib: 1024 } }]
workload:
  jobs:
    - name: a
      atMs: 4000
      durationsMs: { t: 10000 }
      spec:
        tenant: x
        timeoutSeconds: 30
        tasks: [{ id: t, kind: command, expectedDurationMs: 8000, timeoutSeconds: 5, retry: { initialBackoffMs: 2000 } }]
  generators:
    - { name: gen, count: 3, startMs: 1000, intervalMs: 6000, jitterMs: 500, template: { tenant: x, tasks: [{ id: x, kind: command }] } }
faults:
  - { atMs: 30000, durationMs: 10000, kind: crash, target: { worker: g-1 } }
"#;

    #[test]
    fn every_time_of_a_scenario_is_multiplied_and_seconds_round_up() {
        let sc = Scenario::parse("t.yaml", SCENARIO).unwrap();
        let s = time_scaled(&sc, 0.05);
        assert_eq!(s.horizon_seconds, 5);
        assert_eq!(s.heartbeat_interval_ms, 250);
        assert_eq!(s.settings.stale_after_ms, 750);
        assert_eq!(s.settings.lost_after_ms, 3000);
        assert_eq!(s.settings.model_load_ms, 1500);
        assert_eq!(s.cold_start.fixed_ms, 1000);
        assert_eq!(s.cold_start.samples_ms, vec![50, 150]);
        let j = &s.workload.jobs[0];
        assert_eq!(j.at_ms, 200);
        assert_eq!(j.durations_ms["t"], 500);
        assert_eq!(j.spec.timeout_seconds, Some(2));
        let t = &j.spec.tasks[0];
        assert_eq!(t.expected_duration_ms, Some(400));
        assert_eq!(
            t.timeout_seconds,
            Some(1),
            "0.25 s rounds up to 1 s, never to 0"
        );
        assert_eq!(t.retry.initial_backoff_ms, 100);
        let g = &s.workload.generators[0];
        assert_eq!((g.start_ms, g.interval_ms, g.jitter_ms), (50, 300, 25));
        assert_eq!(s.faults[0].at_ms, 1500);
        assert_eq!(s.faults[0].duration_ms, Some(500));
        assert_eq!(s.checks.max_jct_p95_s, Some(10.0));
    }

    #[test]
    fn scaling_by_one_changes_nothing() {
        let sc = Scenario::parse("t.yaml", SCENARIO).unwrap();
        assert_eq!(time_scaled(&sc, 1.0), sc);
    }
}
