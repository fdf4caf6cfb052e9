//! The protocol end to end over turmoil's simulated network, under a fixed seed: real agents on
//! their own hosts, the real server on a control-plane host, and the real scheduling core behind
//! it, wired the way the operator and the simulator wire them.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::{
    Agent, AgentConfig, AgentHandle, Backoff, ControlMessage, Error, Executor, Inbound, Outcome,
    Server, ServerConfig, TaskAssignment, TurmoilNet,
};
use splai_scheduler::api::{Capabilities, Health, JobPhase, JobSpec, TaskSpec};
use splai_scheduler::{Effect, Event, Scheduler, Settings, Strategy, Timestamp};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const SEED: u64 = 20_260_101;
const CONTROL_PLANE: &str = "cp";
const CONTROL_PLANE_ADDR: &str = "cp:7070";
/// 2026-01-01T00:00:00Z, the simulated wall clock's zero.
const EPOCH_MS: u64 = 1_767_225_600_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Simulated time since the start of the run.
fn now() -> Duration {
    turmoil::sim_elapsed().expect("inside a simulation")
}

async fn at(t: Duration) {
    let now = now();
    if t > now {
        tokio::time::sleep(t - now).await;
    }
}

/// What the control plane saw, in order.
#[derive(Debug, Default)]
struct Journal {
    events: Vec<(Duration, String, Event)>,
    effects: Vec<(Duration, Effect)>,
    disconnects: Vec<(Option<String>, Error)>,
}

impl Journal {
    fn heartbeats(&self, worker: &str) -> Vec<(Duration, u64)> {
        self.events
            .iter()
            .filter_map(|(t, w, e)| match e {
                Event::Heartbeat(hb) if w == worker => Some((*t, hb.incarnation)),
                _ => None,
            })
            .collect()
    }

    fn heartbeats_between(&self, worker: &str, from: Duration, to: Duration) -> usize {
        self.heartbeats(worker)
            .iter()
            .filter(|(t, _)| *t > from && *t < to)
            .count()
    }

    fn registrations(&self, worker: &str) -> Vec<(Duration, u64)> {
        self.events
            .iter()
            .filter_map(|(t, w, e)| match e {
                Event::WorkerRegistered { incarnation, .. } if w == worker => {
                    Some((*t, *incarnation))
                }
                _ => None,
            })
            .collect()
    }

    fn health(&self, worker: &str) -> Vec<(Duration, Health)> {
        self.effects
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::WorkerHealthChanged { worker: w, to, .. } if &**w == worker => {
                    Some((*t, *to))
                }
                _ => None,
            })
            .collect()
    }

    fn job_phase(&self, job: &str) -> Option<JobPhase> {
        self.effects.iter().rev().find_map(|(_, e)| match e {
            Effect::JobPhaseChanged { job: j, to, .. } if &**j == job => Some(*to),
            _ => None,
        })
    }

    /// `(worker, attempt, artifact)` of every success reported for `job`.
    fn successes(&self, job: &str) -> Vec<(String, u32, Option<String>)> {
        self.events
            .iter()
            .filter_map(|(_, w, e)| match e {
                Event::TaskSucceeded {
                    attempt,
                    artifact_uri,
                    ..
                } if attempt.job == job => Some((w.clone(), attempt.attempt, artifact_uri.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Sleeps for the task's expected duration; fails at once if the assignment came without its spec.
struct SleepExecutor;

impl Executor for SleepExecutor {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        let Some(spec) = &task.task_spec else {
            return Outcome::Failed {
                error: "assignment without a task spec".into(),
                retryable: false,
            };
        };
        let ms = spec.expected_duration_ms.unwrap_or(1_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Outcome::Succeeded {
            artifact_uri: Some(format!("mem://{}/{}/{}", task.job, task.task, task.attempt)),
        }
    }
}

fn agent_config(worker: &str, control_plane: &str) -> AgentConfig {
    AgentConfig {
        heartbeat_interval: secs(1),
        dead_after: secs(3),
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: secs(4),
        },
        ..AgentConfig::new(worker, control_plane, Capabilities::default())
    }
}

fn one_task_job(task: &str, duration_ms: u64) -> JobSpec {
    JobSpec {
        tenant: "acme".into(),
        tasks: vec![TaskSpec {
            id: task.into(),
            expected_duration_ms: Some(duration_ms),
            ..TaskSpec::default()
        }],
        ..JobSpec::default()
    }
}

type Shared<T> = Arc<Mutex<T>>;

/// A control plane on host `cp` and agents on hosts of their own, all under [`SEED`].
struct Scenario {
    sim: turmoil::Sim<'static>,
    journal: Shared<Journal>,
    agents: Shared<BTreeMap<String, AgentHandle>>,
}

impl Scenario {
    fn with_jobs(jobs: Vec<(&'static str, JobSpec)>) -> Self {
        let mut sim = turmoil::Builder::new()
            .rng_seed(SEED)
            .simulation_duration(secs(300))
            .build();
        let journal = Shared::default();
        let cp_journal = Arc::clone(&journal);
        sim.host(CONTROL_PLANE, move || {
            control_plane(Arc::clone(&cp_journal), jobs.clone())
        });
        Scenario {
            sim,
            journal,
            agents: Shared::default(),
        }
    }

    fn new() -> Self {
        Scenario::with_jobs(Vec::new())
    }

    /// Runs `workers` as agents on one host, the way a simulator packs a fleet onto few hosts.
    fn agents_on(&mut self, host: &str, workers: &[&str], control_plane: &'static str) {
        let workers: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
        let agents = Arc::clone(&self.agents);
        self.sim.host(host, move || {
            let workers = workers.clone();
            let agents = Arc::clone(&agents);
            async move {
                for worker in &workers {
                    let config = agent_config(worker, control_plane);
                    let (agent, handle) = Agent::new(TurmoilNet, config, SleepExecutor);
                    agents.lock().unwrap().insert(worker.clone(), handle);
                    tokio::spawn(agent.run());
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    fn agent(&mut self, worker: &str) {
        self.agents_on(worker, &[worker], CONTROL_PLANE_ADDR);
    }

    /// Runs `script` on a client host, then lets the simulation go on until `until`.
    fn run<F, Fut>(mut self, until: Duration, script: F) -> Shared<Journal>
    where
        F: FnOnce(Shared<BTreeMap<String, AgentHandle>>) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let script = script(Arc::clone(&self.agents));
        self.sim.client("script", async move {
            script.await;
            at(until).await;
            Ok(())
        });
        self.sim.run().expect("simulation failed");
        self.journal
    }
}

/// The control plane: the protocol server in front of the real core, as a thin adapter.
async fn control_plane(
    journal: Shared<Journal>,
    jobs: Vec<(&'static str, JobSpec)>,
) -> turmoil::Result {
    let server = Server::bind(TurmoilNet, "0.0.0.0:7070", ServerConfig::default()).await?;
    let control = server.handle();
    let (events_tx, mut events) = mpsc::channel(1024);
    tokio::spawn(server.serve(events_tx));

    let settings = Settings {
        stale_after_ms: 3_000,
        lost_after_ms: 10_000,
        ..Settings::default()
    };
    let mut core = Scheduler::new(settings, Strategy::Splai, SEED);
    let mut specs = BTreeMap::new();
    let mut pending = VecDeque::new();
    for (key, spec) in jobs {
        for task in &spec.tasks {
            specs.insert((key.to_string(), task.id.clone()), task.clone());
        }
        pending.push_back(Event::JobSubmitted {
            key: key.into(),
            spec,
            trace_id: None,
        });
    }
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    loop {
        let event = match pending.pop_front() {
            Some(event) => event,
            None => tokio::select! {
                biased;
                inbound = events.recv() => match inbound.expect("the server stopped") {
                    Inbound::Event { worker, event, .. } => {
                        journal.lock().unwrap().events.push((now(), worker, event.clone()));
                        event
                    }
                    Inbound::Disconnected { worker, reason, .. } => {
                        journal.lock().unwrap().disconnects.push((worker, reason));
                        continue;
                    }
                },
                _ = ticks.tick() => Event::Tick,
            },
        };
        let clock = Timestamp(EPOCH_MS + now().as_millis() as u64);
        for effect in core.handle(event, clock) {
            if let Some((worker, message)) = ControlMessage::from_effect(&effect) {
                let message = match message {
                    ControlMessage::Assign(task) => {
                        let spec = specs[&(task.job.clone(), task.task.clone())].clone();
                        ControlMessage::Assign(Box::new(task.with_task_spec(spec)))
                    }
                    other => other,
                };
                // A worker that just dropped off is the core's to notice, by its heartbeats.
                let _ = control.send(&worker, message);
            }
            journal.lock().unwrap().effects.push((now(), effect));
        }
    }
}

#[test]
fn two_agents_on_two_hosts_register_and_heartbeat_to_the_control_plane() {
    let mut scenario = Scenario::new();
    scenario.agent("w1");
    scenario.agent("w2");
    let journal = scenario.run(secs(20), |_| async {});
    let journal = journal.lock().unwrap();
    for worker in ["w1", "w2"] {
        let registrations = journal.registrations(worker);
        assert_eq!(registrations.len(), 1, "{worker}: {registrations:?}");
        assert_eq!(registrations[0].1, 1);
        let heartbeats = journal.heartbeats(worker);
        assert!(heartbeats.len() >= 15, "{worker}: {heartbeats:?}");
        assert!(heartbeats.iter().all(|(_, incarnation)| *incarnation == 1));
        assert_eq!(
            journal.health(worker).last().map(|h| h.1),
            Some(Health::Healthy)
        );
    }
    assert!(journal.disconnects.is_empty(), "{:?}", journal.disconnects);
}

#[test]
fn many_agents_share_one_host() {
    let mut scenario = Scenario::new();
    scenario.agents_on("rack-1", &["r1", "r2", "r3", "r4"], CONTROL_PLANE_ADDR);
    let journal = scenario.run(secs(10), |_| async {});
    let journal = journal.lock().unwrap();
    for worker in ["r1", "r2", "r3", "r4"] {
        assert_eq!(journal.registrations(worker).len(), 1, "{worker}");
        assert!(journal.heartbeats(worker).len() >= 5, "{worker}");
    }
}

#[test]
fn an_assignment_round_trips_to_succeeded() {
    let mut scenario = Scenario::with_jobs(vec![("docs", one_task_job("summarize", 2_000))]);
    scenario.agent("w1");
    scenario.agent("w2");
    let journal = scenario.run(secs(20), |_| async {});
    let journal = journal.lock().unwrap();
    let successes = journal.successes("docs");
    assert_eq!(successes.len(), 1, "{successes:?}");
    let (worker, attempt, artifact) = &successes[0];
    assert_eq!(
        artifact.as_deref(),
        Some(format!("mem://docs/summarize/{attempt}").as_str())
    );
    let started = journal.events.iter().any(|(_, w, e)| {
        matches!(e, Event::TaskStarted { attempt: a, .. } if w == worker && a.attempt == *attempt)
    });
    assert!(started, "no TaskStarted from {worker}");
    assert_eq!(journal.job_phase("docs"), Some(JobPhase::Completed));
}

#[test]
fn a_partitioned_agent_stops_heartbeating_and_resumes_after_repair() {
    let mut scenario = Scenario::new();
    scenario.agent("w1");
    scenario.agent("w2");
    let journal = scenario.run(secs(60), |_| async {
        at(secs(10)).await;
        turmoil::partition("w1", CONTROL_PLANE);
        at(secs(30)).await;
        turmoil::repair("w1", CONTROL_PLANE);
    });
    let journal = journal.lock().unwrap();
    // Frames already on the wire at 10 s may still land; nothing from w1 after that.
    assert_eq!(journal.heartbeats_between("w1", secs(11), secs(30)), 0);
    // The agent gave up on the dead connection long before, so it is back within one backoff
    // (at most 4 s), not when the control plane's 30 s idle timeout would have noticed.
    assert!(journal.heartbeats_between("w1", secs(30), secs(35)) >= 1);
    assert!(journal.heartbeats_between("w1", secs(35), secs(60)) >= 20);
    assert!(journal.heartbeats_between("w2", secs(11), secs(30)) >= 15);
    // A reconnect is not a restart: same incarnation.
    let registrations = journal.registrations("w1");
    assert!(registrations.len() >= 2, "{registrations:?}");
    assert!(
        registrations
            .iter()
            .all(|(_, incarnation)| *incarnation == 1)
    );
    let health = journal.health("w1");
    assert!(
        health
            .iter()
            .any(|(t, h)| *t < secs(30) && *h != Health::Healthy),
        "the core never saw w1 go quiet: {health:?}"
    );
    assert_eq!(health.last().map(|h| h.1), Some(Health::Healthy));
    assert!(
        journal
            .health("w2")
            .iter()
            .all(|(_, h)| *h == Health::Healthy)
    );
}

#[test]
fn a_report_lost_in_a_partition_is_sent_again_after_reconnecting() {
    // Assigned at about 1 s, the attempt ends at about 6 s, while w1 is cut off (4 s to 9 s):
    // its success report goes into the void and must be sent again on the next connection.
    let mut scenario = Scenario::with_jobs(vec![("docs", one_task_job("summarize", 5_000))]);
    scenario.agent("w1");
    let journal = scenario.run(secs(20), |_| async {
        at(secs(4)).await;
        turmoil::partition("w1", CONTROL_PLANE);
        at(secs(9)).await;
        turmoil::repair("w1", CONTROL_PLANE);
    });
    let journal = journal.lock().unwrap();
    let delivered: Vec<_> = journal
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::TaskSucceeded { .. }))
        .map(|(t, _, e)| (*t, e.clone()))
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].0 > secs(9), "{delivered:?}");
    assert_eq!(journal.successes("docs")[0].1, 1);
    assert_eq!(journal.job_phase("docs"), Some(JobPhase::Completed));
}

#[test]
fn paused_heartbeats_stop_for_the_pause_and_resume_on_the_same_connection() {
    let mut scenario = Scenario::new();
    scenario.agent("w1");
    let journal = scenario.run(secs(30), |agents| async move {
        at(secs(10)).await;
        let w1 = agents.lock().unwrap()["w1"].clone();
        w1.pause_heartbeats(secs(8)).unwrap();
    });
    let journal = journal.lock().unwrap();
    assert_eq!(journal.heartbeats_between("w1", secs(11), secs(18)), 0);
    assert!(journal.heartbeats_between("w1", secs(19), secs(30)) >= 8);
    assert_eq!(journal.registrations("w1").len(), 1);
}

#[test]
fn a_crashed_agent_re_registers_with_a_new_incarnation_and_its_lost_attempt_runs_again() {
    let mut scenario = Scenario::with_jobs(vec![("docs", one_task_job("summarize", 10_000))]);
    scenario.agent("w1");
    let agents = Arc::clone(&scenario.agents);
    let journal = scenario.run(secs(60), |agents| async move {
        at(secs(8)).await;
        let w1 = agents.lock().unwrap()["w1"].clone();
        w1.crash(secs(2)).unwrap();
    });
    let journal = journal.lock().unwrap();
    let registrations = journal.registrations("w1");
    assert_eq!(
        registrations.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let restarted = registrations[1].0;
    assert!(restarted >= secs(10));
    assert!(
        journal
            .heartbeats("w1")
            .iter()
            .all(|(t, incarnation)| (*t < restarted) == (*incarnation == 1))
    );
    assert_eq!(agents.lock().unwrap()["w1"].status().incarnation, 2);
    // The first attempt died with the crash; a later one succeeded.
    let successes = journal.successes("docs");
    assert_eq!(successes.len(), 1, "{successes:?}");
    assert!(successes[0].1 >= 2, "{successes:?}");
    assert_eq!(journal.job_phase("docs"), Some(JobPhase::Completed));
}

/// Writes `bytes` on a fresh connection to the control plane and waits for it to hang up.
async fn send_raw(bytes: &[u8]) {
    let mut stream = turmoil::net::TcpStream::connect(CONTROL_PLANE_ADDR)
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut reader = splai_protocol::FrameReader::new(stream, 1024);
    let hung_up = loop {
        if let Err(e) = reader.recv::<ControlMessage>().await {
            break e;
        }
    };
    assert!(matches!(hung_up, Error::Closed), "{hung_up:?}");
}

fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[test]
fn oversized_malformed_and_impostor_frames_close_the_connection_with_a_typed_error() {
    let mut scenario = Scenario::new();
    scenario.agent("w1");
    let journal = scenario.run(secs(10), |_| async {
        at(secs(2)).await;
        send_raw(&9_000_000u32.to_be_bytes()).await;
        send_raw(&raw_frame(b"{\"version\":1,\"message\":")).await;
        let heartbeat_first =
            br#"{"version":1,"message":{"type":"heartbeat","worker":"w7","incarnation":1}}"#;
        send_raw(&raw_frame(heartbeat_first)).await;
        let register = br#"{"version":1,"message":{"type":"register","worker":"w7","capabilities":{"cpuMillis":1000,"memoryMib":1024},"incarnation":1}}"#;
        let impostor =
            br#"{"version":1,"message":{"type":"heartbeat","worker":"w1","incarnation":1}}"#;
        send_raw(&[raw_frame(register), raw_frame(impostor)].concat()).await;
    });
    let journal = journal.lock().unwrap();
    let reasons: Vec<_> = journal
        .disconnects
        .iter()
        .map(|(w, e)| (w.clone(), e))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[..3].iter().all(|(worker, _)| worker.is_none()));
    assert_eq!(
        reasons[0].1.to_string(),
        "frame of 9000000 bytes exceeds the 4194304-byte limit"
    );
    assert!(
        matches!(reasons[1].1, Error::Malformed(_)),
        "{}",
        reasons[1].1
    );
    assert!(matches!(
        reasons[2].1,
        Error::NotRegistered { got: "heartbeat" }
    ));
    assert_eq!(reasons[3].0.as_deref(), Some("w7"));
    assert_eq!(
        reasons[3].1.to_string(),
        "connection registered as worker `w7` sent a message for worker `w1`"
    );
    // The server kept serving the real agent throughout.
    assert!(journal.heartbeats_between("w1", secs(2), secs(10)) >= 7);
}

#[test]
fn an_agent_told_an_oversized_frame_records_the_typed_error_and_keeps_retrying() {
    let mut scenario = Scenario::new();
    scenario.sim.host("rogue", || async {
        let listener = turmoil::net::TcpListener::bind("0.0.0.0:7070").await?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.write_all(&9_000_000u32.to_be_bytes()).await?;
        }
    });
    scenario.agents_on("w9", &["w9"], "rogue:7070");
    let agents = Arc::clone(&scenario.agents);
    scenario.run(secs(10), |_| async {});
    let status = agents.lock().unwrap()["w9"].status();
    assert!(!status.connected);
    let error = status.last_error.expect("the agent saw an error");
    assert!(
        matches!(*error, Error::FrameTooLarge { len: 9_000_000, .. }),
        "{error}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut scenario = Scenario::with_jobs(vec![("docs", one_task_job("summarize", 3_000))]);
        scenario.agent("w1");
        scenario.agent("w2");
        let journal = scenario.run(secs(30), |_| async {
            at(secs(5)).await;
            turmoil::partition("w2", CONTROL_PLANE);
            at(secs(15)).await;
            turmoil::repair("w2", CONTROL_PLANE);
        });
        let journal = journal.lock().unwrap();
        format!("{:?}\n{:?}", journal.events, journal.effects)
    };
    let first = run();
    assert!(first.contains("TaskSucceeded"));
    assert_eq!(first, run());
}
