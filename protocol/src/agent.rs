//! The worker agent's side: one session with the control plane that registers, heartbeats, runs
//! what it is assigned through an [`Executor`], reports back, and reconnects when the link dies.
//!
//! Reports survive a lost connection: each is kept until the control plane has answered a
//! heartbeat sent after it (frames on one connection arrive in order), and is sent again on the
//! next connection otherwise. The core fences reports by attempt, so a duplicate is harmless.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hasher as _;
use std::sync::Arc;
use std::time::Duration;

use splai_scheduler::Heartbeat;
use splai_scheduler::api::{AttemptRef, Capabilities, Utilization};
use splai_scheduler::hash::FnvHasher;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};

use crate::error::{Error, Result};
use crate::frame::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter};
use crate::messages::{AgentMessage, ControlMessage, Credential, TaskAssignment};
use crate::net::Network;

/// Runs attempts. Cancellation drops the future, so an executor frees what it holds on drop (a
/// child process spawned with `kill_on_drop`, say).
pub trait Executor: Send + Sync + 'static {
    fn run(&self, task: TaskAssignment) -> impl Future<Output = Outcome> + Send;

    /// What each heartbeat reports besides the running attempts.
    fn load(&self) -> Load {
        Load::default()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded {
        artifact_uri: Option<String>,
    },
    /// `retryable: false` fails the task at once, whatever its retry budget.
    Failed {
        error: String,
        retryable: bool,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Load {
    pub utilization: Utilization,
    pub warm_models: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub worker: String,
    pub capabilities: Capabilities,
    /// `host:port` of the control plane's agent endpoint, or several separated by commas (one
    /// per operator replica): the agent tries the next one whenever a connection fails or ends,
    /// so it finds the replica that leads.
    pub control_plane: String,
    /// The incarnation of the first registration; each crash adds one. A production agent starts
    /// from a number that grows across process restarts, such as its start time in milliseconds.
    pub incarnation: u64,
    pub heartbeat_interval: Duration,
    /// Reconnect when a heartbeat has gone unanswered this long: a partitioned link drops
    /// segments silently, so only the missing answer shows the connection is dead.
    pub dead_after: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub backoff: Backoff,
    pub max_frame: usize,
    /// What the agent proves its name with, read again for each connection.
    pub credential: Option<CredentialSource>,
}

/// Where an agent's credential comes from.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A file read at each connection, such as a projected service-account token, which the
    /// kubelet replaces before it expires.
    File(std::path::PathBuf),
    /// A fixed credential, for tests and simulations.
    Fixed(Credential),
}

impl CredentialSource {
    fn read(&self) -> Result<Credential> {
        match self {
            CredentialSource::File(path) => std::fs::read_to_string(path)
                .map(|t| Credential(t.trim().to_owned()))
                .map_err(|e| Error::Credential {
                    path: path.clone(),
                    source: e,
                }),
            CredentialSource::Fixed(c) => Ok(c.clone()),
        }
    }
}

impl AgentConfig {
    /// Defaults that fit the core's default `staleAfterMs` of 15 s: a heartbeat every 5 s.
    pub fn new(
        worker: impl Into<String>,
        control_plane: impl Into<String>,
        capabilities: Capabilities,
    ) -> Self {
        AgentConfig {
            worker: worker.into(),
            capabilities,
            control_plane: control_plane.into(),
            incarnation: 1,
            heartbeat_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            max_frame: DEFAULT_MAX_FRAME,
            credential: None,
        }
    }
}

/// Capped exponential backoff between reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row: `initial` doubled per failure up to
    /// `max`, less up to a quarter. The jitter is a hash of the worker and the count rather than
    /// a random draw, so a fleet that lost the control plane together spreads its reconnects and
    /// a simulation stays reproducible.
    pub fn delay(&self, failures: u32, worker: &str) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(2u32.saturating_pow(failures.min(31)));
        let base = u64::try_from(doubled.min(self.max).as_millis()).unwrap_or(u64::MAX);
        let spread = {
            let mut h = FnvHasher::default();
            h.write(worker.as_bytes());
            h.write(&failures.to_le_bytes());
            h.finish()
        } % 1024;
        Duration::from_millis(base - base.saturating_mul(spread) / 4096)
    }
}

/// What the agent is doing, for probes and simulators.
#[derive(Clone, Debug, Default)]
pub struct AgentStatus {
    pub incarnation: u64,
    /// The control plane has answered on the current connection.
    pub connected: bool,
    /// Why the last connection ended or failed.
    pub last_error: Option<Arc<Error>>,
    /// Attempts running now.
    pub running: usize,
}

/// Controls a running [`Agent`]; the fault hooks are what a simulator injects per worker.
#[derive(Clone, Debug)]
pub struct AgentHandle {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<AgentStatus>,
}

impl AgentHandle {
    /// Sends no heartbeats for `duration`; everything else carries on.
    pub fn pause_heartbeats(&self, duration: Duration) -> Result<()> {
        self.command(Command::PauseHeartbeats(duration))
    }

    /// Stops the agent's loop for `duration`, as SIGSTOP stops its process: nothing is read,
    /// sent or reported meanwhile, while running attempts go on. Then it takes what arrived,
    /// reports what finished and heartbeats, in that order.
    pub fn freeze(&self, duration: Duration) -> Result<()> {
        self.command(Command::Freeze(duration))
    }

    /// Drops the connection and every running attempt and unsent report, stays down for
    /// `restart_after`, then registers again with the next incarnation.
    pub fn crash(&self, restart_after: Duration) -> Result<()> {
        self.command(Command::Crash(restart_after))
    }

    /// Stops the agent: [`Agent::run`] aborts its attempts and returns.
    pub fn shutdown(&self) -> Result<()> {
        self.command(Command::Shutdown)
    }

    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Changes to the status, for waiting on one.
    pub fn watch(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    fn command(&self, command: Command) -> Result<()> {
        self.commands.send(command).map_err(|_| Error::AgentStopped)
    }
}

#[derive(Debug)]
enum Command {
    PauseHeartbeats(Duration),
    Freeze(Duration),
    Crash(Duration),
    Shutdown,
}

/// Why a session or a wait ended.
enum Stop {
    Shutdown,
    Crash(Duration),
    Lost(Error),
}

/// A report not yet known to have reached the control plane.
struct Unconfirmed {
    message: AgentMessage,
    /// The number of answers on the current connection that proves delivery.
    confirmed_by: u64,
}

pub struct Agent<N: Network, E: Executor> {
    net: N,
    config: AgentConfig,
    executor: Arc<E>,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    status: watch::Sender<AgentStatus>,
    incarnation: u64,
    tasks: JoinSet<Outcome>,
    /// Ordered, so heartbeats list attempts in the same order on every run.
    running: BTreeMap<AttemptRef, AbortHandle>,
    attempts: HashMap<Id, AttemptRef>,
    unconfirmed: Vec<Unconfirmed>,
    paused_until: Option<Instant>,
    /// Set by a freeze command, taken by the loop that read it.
    frozen_for: Option<Duration>,
    failures: u32,
    /// Which of the control-plane endpoints to dial next.
    endpoint: usize,
}

impl<N: Network, E: Executor> Agent<N, E> {
    pub fn new(net: N, config: AgentConfig, executor: E) -> (Self, AgentHandle) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (status, status_rx) = watch::channel(AgentStatus {
            incarnation: config.incarnation,
            ..AgentStatus::default()
        });
        let agent = Agent {
            net,
            incarnation: config.incarnation,
            config,
            executor: Arc::new(executor),
            commands,
            commands_open: true,
            status,
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
            attempts: HashMap::new(),
            unconfirmed: Vec::new(),
            paused_until: None,
            frozen_for: None,
            failures: 0,
            endpoint: 0,
        };
        let handle = AgentHandle {
            commands: commands_tx,
            status: status_rx,
        };
        (agent, handle)
    }

    /// Runs until [`AgentHandle::shutdown`]. Connection failures are retried, never returned.
    pub async fn run(mut self) {
        let mut wait = Duration::ZERO;
        loop {
            let stop = match self.idle(wait).await {
                Some(stop) => stop,
                None => self.session().await,
            };
            self.status.send_modify(|s| s.connected = false);
            wait = match stop {
                Stop::Shutdown => {
                    self.tasks.shutdown().await;
                    return;
                }
                Stop::Crash(restart_after) => {
                    self.crash();
                    restart_after
                }
                Stop::Lost(error) => {
                    self.status
                        .send_modify(|s| s.last_error = Some(Arc::new(error)));
                    self.endpoint = self.endpoint.wrapping_add(1);
                    let delay = self
                        .config
                        .backoff
                        .delay(self.failures, &self.config.worker);
                    self.failures = self.failures.saturating_add(1);
                    delay
                }
            };
        }
    }

    /// Loses everything a process restart would.
    fn crash(&mut self) {
        // Dropping the set aborts every attempt in it.
        self.tasks = JoinSet::new();
        self.running.clear();
        self.status.send_modify(|s| s.running = 0);
        self.attempts.clear();
        self.unconfirmed.clear();
        self.paused_until = None;
        self.failures = 0;
        self.incarnation += 1;
        let incarnation = self.incarnation;
        self.status.send_modify(|s| s.incarnation = incarnation);
    }

    /// Waits while disconnected, still obeying commands and collecting finished attempts.
    async fn idle(&mut self, wait: Duration) -> Option<Stop> {
        let until = Instant::now() + wait;
        loop {
            // `biased`: tokio's random branch order is not seeded by turmoil, so polling in a
            // fixed order keeps simulations reproducible.
            tokio::select! {
                biased;
                command = self.commands.recv(), if self.commands_open => {
                    if let Some(stop) = self.command(command) {
                        return Some(stop);
                    }
                    self.stay_frozen().await;
                }
                Some(joined) = self.tasks.join_next_with_id() => {
                    if let Some(message) = self.finished(joined) {
                        self.unconfirmed.push(Unconfirmed { message, confirmed_by: u64::MAX });
                    }
                }
                () = sleep_until(until) => return None,
            }
        }
    }

    async fn session(&mut self) -> Stop {
        let limit = self.config.connect_timeout;
        let endpoints: Vec<&str> = self
            .config
            .control_plane
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let endpoint = endpoints
            .get(self.endpoint % endpoints.len().max(1))
            .copied()
            .unwrap_or(&self.config.control_plane);
        let stream = match timeout(limit, self.net.connect(endpoint)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Stop::Lost(e.into()),
            Err(_) => {
                return Stop::Lost(Error::Timeout {
                    what: "connecting to the control plane",
                    after: limit,
                });
            }
        };
        let mut link = Link::new(stream, &self.config);
        self.serve(&mut link).await.unwrap_or_else(Stop::Lost)
    }

    async fn serve(&mut self, link: &mut Link<N::Stream>) -> Result<Stop> {
        let credential = match &self.config.credential {
            None => None,
            Some(source) => Some(source.read()?),
        };
        let register = AgentMessage::Register {
            worker: self.config.worker.clone(),
            capabilities: self.config.capabilities.clone(),
            incarnation: self.incarnation,
            credential,
        };
        link.ask(&register).await?;
        for pending in &mut self.unconfirmed {
            pending.confirmed_by = link.asked + 1;
            link.send(&pending.message).await?;
        }
        // The first tick is immediate: the core schedules onto a worker only once it has
        // heartbeated, so the first heartbeat follows the registration at once.
        let mut ticker = tokio::time::interval(self.config.heartbeat_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = link
                .unanswered
                .front()
                .map(|sent| *sent + self.config.dead_after);
            tokio::select! {
                biased;
                command = self.commands.recv(), if self.commands_open => {
                    if let Some(stop) = self.command(command) {
                        return Ok(stop);
                    }
                    self.stay_frozen().await;
                }
                message = link.reader.recv::<ControlMessage>() => {
                    self.on_control(link, message?).await?;
                }
                Some(joined) = self.tasks.join_next_with_id() => {
                    if let Some(report) = self.finished(joined) {
                        self.report(link, report).await?;
                    }
                }
                _ = ticker.tick() => {
                    if self.paused_until.is_none_or(|until| Instant::now() >= until) {
                        self.paused_until = None;
                        link.ask(&self.heartbeat()).await?;
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Err(Error::Timeout {
                        what: "waiting for the control plane to answer a heartbeat",
                        after: self.config.dead_after,
                    });
                }
            }
        }
    }

    /// After a freeze command, does nothing for its duration (see [`AgentHandle::freeze`]).
    async fn stay_frozen(&mut self) {
        if let Some(duration) = self.frozen_for.take() {
            tokio::time::sleep(duration).await;
        }
    }

    fn command(&mut self, command: Option<Command>) -> Option<Stop> {
        match command {
            // Every handle is gone: no more commands will come, but the agent keeps working.
            None => {
                self.commands_open = false;
                None
            }
            Some(Command::PauseHeartbeats(duration)) => {
                self.paused_until = Some(Instant::now() + duration);
                None
            }
            Some(Command::Freeze(duration)) => {
                self.frozen_for = Some(duration);
                None
            }
            Some(Command::Crash(restart_after)) => Some(Stop::Crash(restart_after)),
            Some(Command::Shutdown) => Some(Stop::Shutdown),
        }
    }

    async fn on_control(
        &mut self,
        link: &mut Link<N::Stream>,
        message: ControlMessage,
    ) -> Result<()> {
        match message {
            ControlMessage::Refused { reason } => {
                return Err(Error::Refused {
                    worker: self.config.worker.clone(),
                    reason,
                });
            }
            ControlMessage::Ack => {
                link.unanswered.pop_front();
                link.answered += 1;
                let answered = link.answered;
                self.unconfirmed.retain(|p| p.confirmed_by > answered);
                if answered == 1 {
                    self.failures = 0;
                    self.status.send_modify(|s| s.connected = true);
                }
            }
            ControlMessage::Assign(task) => {
                let attempt = task.attempt_ref();
                // Already running: the control plane resent it.
                if self.running.contains_key(&attempt) {
                    return Ok(());
                }
                let executor = Arc::clone(&self.executor);
                let handle = self.tasks.spawn(async move { executor.run(*task).await });
                self.attempts.insert(handle.id(), attempt.clone());
                self.running.insert(attempt.clone(), handle);
                let n = self.running.len();
                self.status.send_modify(|s| s.running = n);
                let worker = self.config.worker.clone();
                self.report(link, AgentMessage::Started { worker, attempt })
                    .await?;
            }
            ControlMessage::Cancel {
                job, task, attempt, ..
            } => {
                let attempt = AttemptRef { job, task, attempt };
                if let Some(handle) = self.running.remove(&attempt) {
                    handle.abort();
                }
                let n = self.running.len();
                self.status.send_modify(|s| s.running = n);
            }
        }
        Ok(())
    }

    /// The report for an attempt that ended, if the control plane still expects one.
    fn finished(&mut self, joined: Result<(Id, Outcome), JoinError>) -> Option<AgentMessage> {
        let (id, outcome) = match joined {
            Ok(done) => done,
            Err(e) if e.is_cancelled() => {
                self.attempts.remove(&e.id());
                return None;
            }
            Err(e) => (
                e.id(),
                Outcome::Failed {
                    error: format!("the executor panicked: {e}"),
                    retryable: true,
                },
            ),
        };
        let attempt = self.attempts.remove(&id)?;
        // Cancelled just as it finished: the core has already ended this attempt.
        self.running.remove(&attempt)?;
        let n = self.running.len();
        self.status.send_modify(|s| s.running = n);
        let worker = self.config.worker.clone();
        Some(match outcome {
            Outcome::Succeeded { artifact_uri } => AgentMessage::Succeeded {
                worker,
                attempt,
                artifact_uri,
            },
            Outcome::Failed { error, retryable } => AgentMessage::Failed {
                worker,
                attempt,
                error,
                retryable,
            },
        })
    }

    async fn report(&mut self, link: &mut Link<N::Stream>, message: AgentMessage) -> Result<()> {
        self.unconfirmed.push(Unconfirmed {
            message: message.clone(),
            confirmed_by: link.asked + 1,
        });
        link.send(&message).await
    }

    fn heartbeat(&self) -> AgentMessage {
        let Load {
            utilization,
            warm_models,
        } = self.executor.load();
        AgentMessage::Heartbeat(Heartbeat {
            worker: self.config.worker.clone(),
            incarnation: self.incarnation,
            utilization,
            queue_depth: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            warm_models,
            running: self.running.keys().cloned().collect(),
        })
    }
}

/// One connection to the control plane.
struct Link<S> {
    reader: FrameReader<ReadHalf<S>>,
    writer: FrameWriter<WriteHalf<S>>,
    write_timeout: Duration,
    /// Frames sent that the control plane answers (`register` and `heartbeat`).
    asked: u64,
    answered: u64,
    /// When each unanswered one was sent, oldest first.
    unanswered: VecDeque<Instant>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> Link<S> {
    fn new(stream: S, config: &AgentConfig) -> Self {
        let (read, write) = tokio::io::split(stream);
        Link {
            reader: FrameReader::new(read, config.max_frame),
            writer: FrameWriter::new(write, config.max_frame),
            write_timeout: config.write_timeout,
            asked: 0,
            answered: 0,
            unanswered: VecDeque::new(),
        }
    }

    async fn send(&mut self, message: &AgentMessage) -> Result<()> {
        self.writer.send_within(message, self.write_timeout).await
    }

    async fn ask(&mut self, message: &AgentMessage) -> Result<()> {
        self.send(message).await?;
        self.asked += 1;
        self.unanswered.push_back(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_less_at_most_a_quarter() {
        let backoff = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
        };
        for (failures, full) in [(0, 500), (1, 1000), (2, 2000), (4, 8000), (40, 8000)] {
            let delay = backoff.delay(failures, "w1").as_millis() as u64;
            assert!(
                delay <= full && delay > full * 3 / 4,
                "{failures} failures: {delay} ms"
            );
        }
    }

    #[test]
    fn backoff_jitter_differs_between_workers_but_not_between_runs() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let delays: Vec<_> = (0..8).map(|i| backoff.delay(3, &format!("w{i}"))).collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
        assert_eq!(backoff.delay(3, "w5"), delays[5]);
    }
}
