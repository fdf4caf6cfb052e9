//! The control-plane host: the real protocol server in front of the real core, wired as the
//! operator wires it. Agents' messages become core events; the core's assignments and
//! cancellations go back as control messages; the workload's jobs are submitted at their times
//! and the core is woken with `Tick` when its next timer is due.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splai_protocol::{ControlHandle, ControlMessage, Inbound, Server, ServerConfig, TurmoilNet};
use splai_scheduler::api::TaskSpec;
use splai_scheduler::{Effect, Event};
use tokio::sync::mpsc;

use super::sim_ms;
use crate::control::Control;
use crate::executor::{World, lock};
use crate::worker::{Busy, SimWorker};
use crate::workload::Arrival;

/// What the control-plane host works on; the engine reads `control` back after the run.
pub(super) struct Plane {
    pub control: Rc<RefCell<Control>>,
    pub arrivals: Vec<Arrival>,
    /// How long a job takes from its arrival to the control plane (the scenario's setting).
    pub submit_latency_ms: u64,
    pub world: Arc<World>,
    pub workers: Vec<Arc<Mutex<SimWorker>>>,
    pub by_name: BTreeMap<String, usize>,
    pub server: ServerConfig,
    pub port: u16,
    pub sample_every_ms: u64,
    pub horizon_ms: u64,
    /// When the run ended: the millisecond in which every job had arrived and ended, or the
    /// horizon.
    pub ended_at: Rc<Cell<Option<u64>>>,
}

/// Task specs by (job, task), to send with assignments: the core's assignment names the task,
/// the agent needs to know what to run.
type Specs = HashMap<(String, String), TaskSpec>;

/// The control plane's progress through the workload and its inbox.
struct Cursor {
    next_arrival: usize,
    next_sample: u64,
    /// Messages by the millisecond they arrived in, oldest first.
    mailbox: VecDeque<(u64, Inbound)>,
    specs: Specs,
}

impl Plane {
    /// Handles each millisecond once it is over, when everything that arrived in it is in:
    /// arrivals, then the core's due timers, then messages by worker in fleet order (each
    /// worker's in the order sent), then the timeline sample. Answers go out at once, at the
    /// end of that millisecond. The discrete-event engine keeps the same order and delay.
    pub async fn run(self: Rc<Self>) -> ::turmoil::Result {
        let addr = format!("0.0.0.0:{}", self.port);
        let server = Server::bind(TurmoilNet, &addr, self.server.clone()).await?;
        let outbox = server.handle();
        let (events, mut inbound) = mpsc::channel(1 << 14);
        tokio::spawn(server.serve(events));
        let mut at = Cursor {
            next_arrival: 0,
            next_sample: 0,
            mailbox: VecDeque::new(),
            specs: Specs::new(),
        };
        loop {
            // The host is never busy, so every message is taken in the millisecond it lands in.
            let now = sim_ms();
            while let Ok(message) = inbound.try_recv() {
                at.mailbox.push_back((now, message));
            }
            while let Some(t) = self.next_due(&at).filter(|&t| t < now) {
                self.millisecond(t, &mut at, &outbox);
                if self.control.borrow().finished() || t >= self.horizon_ms {
                    // The last timeline row, taken before the agents' hosts step again.
                    self.control().sample(t, self.busy());
                    self.ended_at.set(Some(t));
                    std::future::pending::<()>().await;
                }
            }
            let next = self.next_due(&at).map_or(u64::MAX, |t| t + 1);
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_millis(next - now)) => {}
                Some(message) = inbound.recv() => at.mailbox.push_back((sim_ms(), message)),
            }
        }
    }

    /// The earliest millisecond with something to handle.
    fn next_due(&self, at: &Cursor) -> Option<u64> {
        let arrival = self
            .arrivals
            .get(at.next_arrival)
            .map(|a| a.at_ms + self.submit_latency_ms);
        let wakeup = self.control.borrow().next_wakeup_ms();
        let message = at.mailbox.front().map(|m| m.0);
        [
            arrival,
            wakeup,
            message,
            Some(at.next_sample),
            Some(self.horizon_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn millisecond(&self, t: u64, at: &mut Cursor, outbox: &ControlHandle) {
        let latency = self.submit_latency_ms;
        while let Some(a) = self
            .arrivals
            .get(at.next_arrival)
            .filter(|a| a.at_ms + latency <= t)
        {
            at.next_arrival += 1;
            for task in &a.spec.tasks {
                at.specs
                    .insert((a.key.clone(), task.id.clone()), task.clone());
            }
            let effects = self.control().submit(a, t - latency, t);
            send(outbox, &mut at.specs, effects);
        }
        if self
            .control
            .borrow()
            .next_wakeup_ms()
            .is_some_and(|w| w <= t)
        {
            let effects = self.control().deliver(Event::Tick, t);
            send(outbox, &mut at.specs, effects);
        }
        let mut messages = Vec::new();
        while at.mailbox.front().is_some_and(|m| m.0 <= t) {
            let Some((_, message)) = at.mailbox.pop_front() else {
                break;
            };
            // A connection that ended is for logs only: the core learns that a worker is gone
            // from its missing heartbeats.
            if let Inbound::Event { worker, event, .. } = message {
                let order = self.by_name.get(&worker).copied().unwrap_or(usize::MAX);
                messages.push((order, event));
            }
        }
        // Stable: each worker's messages stay in the order it sent them.
        messages.sort_by_key(|m| m.0);
        for (_, event) in messages {
            let effects = self.control().deliver(event, t);
            send(outbox, &mut at.specs, effects);
        }
        if at.next_sample <= t {
            self.control().sample(t, self.busy());
            at.next_sample += self.sample_every_ms;
        }
    }

    /// What the workers run. The control plane is stepped first on every tick, so when it
    /// handles millisecond `t` the workers have done everything up to `t` and nothing after.
    fn busy(&self) -> Busy {
        self.workers
            .iter()
            .fold(Busy::default(), |b, w| b.plus(Busy::of(&lock(w))))
    }

    /// The control state, with the cold starts workers have recorded since the last event.
    fn control(&self) -> std::cell::RefMut<'_, Control> {
        let mut control = self.control.borrow_mut();
        control.rec.cold.extend(lock(&self.world.cold).drain(..));
        control
    }
}

/// Carries the core's effects to the agents.
fn send(outbox: &ControlHandle, specs: &mut Specs, effects: Vec<Effect>) {
    for e in &effects {
        if let Effect::JobPlanned { job, tasks, .. } = e {
            for t in tasks {
                specs.insert((job.to_string(), t.id.clone()), t.clone());
            }
        }
    }
    for e in &effects {
        let Some((worker, message)) = ControlMessage::from_effect(e) else {
            continue;
        };
        let message = match message {
            ControlMessage::Assign(task) => {
                let key = (task.job.clone(), task.task.clone());
                match specs.get(&key) {
                    Some(spec) => {
                        ControlMessage::Assign(Box::new(task.with_task_spec(spec.clone())))
                    }
                    None => ControlMessage::Assign(task),
                }
            }
            other => other,
        };
        // A worker that is not connected is the core's to notice, by its missing heartbeats,
        // as a message lost on the way would be.
        let _ = outbox.send(&worker, message);
    }
}
