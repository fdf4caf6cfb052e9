//! SPLAI in real pods: `deploy/node` (the kind overlay and a default StorageClass) applied with
//! `kubectl apply -k` to a one-node cluster on this machine (`scripts/node-up.sh`: kubelet,
//! containerd, kube-proxy, CoreDNS), with images made from the project's Dockerfiles around the
//! binaries this test run built. Nothing of SPLAI runs outside pods; the tests use kubectl, the `splai` CLI
//! and the artifact volume's folder on this machine.
//!
//! Needs root (kubelet, containerd). One cluster serves the whole binary; the tests take turns,
//! since some delete SPLAI's pods.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use splai_scheduler::api::Outcome;
use support::{ARTIFACTS, SYSTEM, TENANT, run, splai, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn both_operator_replicas_run_and_one_of_them_holds_the_lease() {
    let (splai, _turn) = splai();
    let pods = wait_for("two running operator pods", 2 * MINUTE, || {
        let pods = splai.running_pods("splai-operator")?;
        Ok((pods.len() == 2).then_some(pods))
    })
    .unwrap();
    let leader = wait_for("a leader", MINUTE, || {
        let leader = splai.leader()?;
        Ok(pods.contains(&leader).then_some(leader))
    })
    .unwrap();
    assert!(pods.contains(&leader), "{leader} leads, pods are {pods:?}");
}

#[test]
fn the_webhook_refuses_a_job_with_a_cycle_through_its_service() {
    let (splai, _turn) = splai();
    let cyclic = format!(
        "apiVersion: splai.io/v1alpha1
kind: SPLAIJob
metadata: {{name: cyclic, namespace: {TENANT}}}
spec:
  tenant: {TENANT}
  tasks:
    - {{id: a, kind: command, command: [\"true\"]}}
    - {{id: b, kind: command, command: [\"true\"]}}
  dependencies:
    - {{task: a, dependsOn: [b]}}
    - {{task: b, dependsOn: [a]}}
"
    );
    let refused = splai.submit("cyclic", &cyclic).unwrap_err().to_string();
    assert!(
        refused.contains("denied the request") && refused.contains("cycle"),
        "{refused}"
    );
    let absent = splai.kubectl(&[
        "-n",
        TENANT,
        "get",
        "splaijob",
        "cyclic",
        "--ignore-not-found",
    ]);
    assert_eq!(absent.unwrap(), "");
}

#[test]
fn the_gateway_answers_over_https_through_its_service() {
    let (splai, _turn) = splai();
    let url = splai.gateway_url().unwrap();
    let ip = url.trim_start_matches("https://");
    let body = support::gateway_health(ip, &splai.gateway_ca).unwrap();
    assert!(!body.trim().is_empty(), "{url}/healthz answered nothing");
    // Plain HTTP is not served.
    let plain = std::process::Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "10"])
        .arg(format!("http://{ip}:443/healthz"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!plain.success());
}

#[test]
fn the_worker_pod_registers_its_splaiworker_under_the_nodes_real_name_and_heartbeats() {
    let (splai, _turn) = splai();
    let beat = |splai: &support::Splai| -> anyhow::Result<Option<String>> {
        let worker = splai.get(&["-n", SYSTEM, "get", "splaiworker", &splai.node_name])?;
        Ok(worker["status"]["lastHeartbeat"]
            .as_str()
            .map(str::to_owned))
    };
    let first = wait_for("the SPLAIWorker's first heartbeat", 2 * MINUTE, || {
        beat(splai)
    })
    .unwrap();
    let later = wait_for("a later heartbeat", 2 * MINUTE, || {
        Ok(beat(splai)?.filter(|b| *b != first))
    })
    .unwrap();
    assert!(later > first, "{later} after {first}");
    let health = splai
        .kubectl(&[
            "-n",
            SYSTEM,
            "get",
            "splaiworker",
            &splai.node_name,
            "-o",
            "jsonpath={.status.health}",
        ])
        .unwrap();
    assert_eq!(health, "Healthy");
}

#[test]
fn hello_submitted_with_the_cli_through_the_gateway_completes_in_the_hardened_worker() {
    let (splai, _turn) = splai();
    let _ = splai.kubectl(&[
        "-n",
        TENANT,
        "delete",
        "splaijob",
        "hello",
        "--ignore-not-found",
        "--wait=true",
    ]);
    let out = run(splai
        .splai_cli()
        .unwrap()
        .current_dir(support::repo())
        .args(["submit", "deploy/examples/hello.yaml", "--watch"]))
    .unwrap();
    assert!(
        out.contains("Completed"),
        "splai submit --watch printed:\n{out}"
    );

    let job = splai.wait_finished("hello", MINUTE).unwrap();
    assert_eq!(job["status"]["phase"], "Completed");
    let records = splai.records(&job).unwrap();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r.outcome == Outcome::Succeeded && r.worker == splai.node_name)
    );
    // The greeting names the host the sandbox ran on: the worker pod.
    let workers = splai.running_pods("splai-worker").unwrap();
    let greeting = std::fs::read_to_string(format!(
        "{ARTIFACTS}/jobs/{TENANT}/hello/greet-a/1/stdout.log"
    ))
    .unwrap();
    assert!(
        workers
            .iter()
            .any(|w| greeting.trim() == format!("hello from {w}")),
        "greeting {greeting:?}, worker pods {workers:?}"
    );
    let file = std::fs::read_to_string(format!(
        "{ARTIFACTS}/jobs/{TENANT}/hello/greet-b/1/out/greeting.txt"
    ))
    .unwrap();
    assert!(file.starts_with("hello from splai-worker-"), "{file:?}");
}

#[test]
fn a_command_task_runs_as_65532_with_no_capabilities_no_new_privileges_and_a_read_only_root() {
    let (splai, _turn) = splai();
    let probe = format!(
        "apiVersion: splai.io/v1alpha1
kind: SPLAIJob
metadata: {{name: probe, namespace: {TENANT}}}
spec:
  tenant: {TENANT}
  tasks:
    - id: probe
      kind: command
      command: [sh, -c, \"id -u; grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; touch /probe 2>&1; echo written > here.txt && cat here.txt\"]
      resources: {{cpuMillis: 100, memoryMib: 32}}
      timeoutSeconds: 60
"
    );
    splai.submit("probe", &probe).unwrap();
    let job = splai.wait_finished("probe", 2 * MINUTE).unwrap();
    assert_eq!(job["status"]["phase"], "Completed", "{job:#}");
    let out = std::fs::read_to_string(format!(
        "{ARTIFACTS}/jobs/{TENANT}/probe/probe/1/stdout.log"
    ))
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65532", "{out}");
    assert!(lines.contains(&"NoNewPrivs:\t1"), "{out}");
    assert!(lines.contains(&"CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    // Its own folder (under the worker's --work-dir volume) is writable.
    assert_eq!(lines.last(), Some(&"written"), "{out}");
}

#[test]
fn a_command_task_cannot_reach_the_workers_token_environment_or_other_tasks() {
    let (splai, _turn) = splai();
    // PID 1 of the worker container is the agent; its token is the projected one.
    let probe = format!(
        "apiVersion: splai.io/v1alpha1
kind: SPLAIJob
metadata: {{name: isolation, namespace: {TENANT}}}
spec:
  tenant: {TENANT}
  tasks:
    - id: isolation
      kind: command
      command: [sh, -c, \"cat /var/run/secrets/splai/token || echo token-denied; head -c 20 /proc/1/environ || echo environ-denied; ls /var/lib/splai/work || echo work-denied; kill -0 1 || echo signal-denied; echo own > own.txt && cat own.txt\"]
      resources: {{cpuMillis: 100, memoryMib: 32}}
      timeoutSeconds: 60
"
    );
    splai.submit("isolation", &probe).unwrap();
    let job = splai.wait_finished("isolation", 2 * MINUTE).unwrap();
    assert_eq!(job["status"]["phase"], "Completed", "{job:#}");
    let out = std::fs::read_to_string(format!(
        "{ARTIFACTS}/jobs/{TENANT}/isolation/isolation/1/stdout.log"
    ))
    .unwrap();
    for denied in [
        "token-denied",
        "environ-denied",
        "work-denied",
        "signal-denied",
    ] {
        assert!(out.lines().any(|l| l == denied), "not {denied}: {out}");
    }
    assert_eq!(out.lines().last(), Some("own"), "{out}");
}

/// A chain of `n` tasks that each sleep `seconds`.
fn chain(name: &str, n: usize, seconds: u32) -> String {
    let mut yaml = format!(
        "apiVersion: splai.io/v1alpha1\nkind: SPLAIJob\nmetadata: {{name: {name}, namespace: {TENANT}}}\nspec:\n  tenant: {TENANT}\n  tasks:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "    - {{id: t{i}, kind: command, command: [sh, -c, \"sleep {seconds}; echo t{i}\"], resources: {{cpuMillis: 100, memoryMib: 32}}, timeoutSeconds: 120}}\n"
        ));
    }
    if n > 1 {
        yaml.push_str("  dependencies:\n");
        for i in 1..n {
            yaml.push_str(&format!("    - {{task: t{i}, dependsOn: [t{}]}}\n", i - 1));
        }
    }
    yaml
}

/// Waits until the job has a task in the Running phase (`X` in `status.taskPhases`).
fn wait_running(splai: &support::Splai, name: &str) {
    wait_for(&format!("a running task of {name}"), 2 * MINUTE, || {
        let job = splai.job(name)?;
        Ok(job["status"]["taskPhases"]
            .as_str()
            .is_some_and(|p| p.contains('X'))
            .then_some(()))
    })
    .unwrap();
}

#[test]
fn deleting_the_leading_operator_mid_job_hands_over_and_runs_no_task_twice() {
    let (splai, _turn) = splai();
    splai.submit("handover", &chain("handover", 3, 4)).unwrap();
    wait_running(splai, "handover");
    let leader = splai.leader().unwrap();
    splai
        .kubectl(&["-n", SYSTEM, "delete", "pod", &leader, "--wait=false"])
        .unwrap();
    let next = wait_for("another leader", 2 * MINUTE, || {
        let now = splai.leader()?;
        Ok((!now.is_empty() && now != leader).then_some(now))
    })
    .unwrap();
    assert_ne!(next, leader);
    let job = splai.wait_finished("handover", 4 * MINUTE).unwrap();
    assert_eq!(job["status"]["phase"], "Completed", "{job:#}");
    let records = splai.records(&job).unwrap();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        *runs.entry(r.task.as_str()).or_default() += 1;
    }
    assert_eq!(
        runs,
        BTreeMap::from([("t0", 1), ("t1", 1), ("t2", 1)]),
        "{records:#?}"
    );
    assert!(records.iter().all(|r| r.outcome == Outcome::Succeeded));
}

#[test]
fn deleting_the_worker_pod_mid_task_retries_the_lost_attempt_in_the_new_pod() {
    let (splai, _turn) = splai();
    splai.submit("lost", &chain("lost", 1, 15)).unwrap();
    wait_running(splai, "lost");
    let before = splai.running_pods("splai-worker").unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    splai
        .kubectl(&["-n", SYSTEM, "delete", "pod", &before[0], "--wait=false"])
        .unwrap();
    let after = wait_for("the DaemonSet's new worker pod", 2 * MINUTE, || {
        let pods = splai.running_pods("splai-worker")?;
        Ok((pods.len() == 1 && pods[0] != before[0]).then(|| pods[0].clone()))
    })
    .unwrap();
    let job = splai.wait_finished("lost", 4 * MINUTE).unwrap();
    assert_eq!(job["status"]["phase"], "Completed", "{job:#}");
    let records = splai.records(&job).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_ne!(records[0].outcome, Outcome::Succeeded);
    assert_eq!(
        (records[1].attempt, records[1].outcome),
        (2, Outcome::Succeeded)
    );
    assert_ne!(after, before[0]);
}
