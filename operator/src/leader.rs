//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the leader renews the lease; a standby takes it once it has gone unrenewed for its duration.
//! Every update carries the lease's `resourceVersion`, so two candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp as JTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name, usually its pod name.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the leader renews, well within `duration`.
    pub renew_every: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader lease {namespace}/{name} to {holder}")]
    Lost {
        namespace: String,
        name: String,
        holder: String,
    },
    #[error(
        "could not renew the leader lease {namespace}/{name} for {secs} s, longer than it holds; stepping down"
    )]
    Expired {
        namespace: String,
        name: String,
        secs: u64,
    },
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_take().await {
                Ok(true) => {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease update failed"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews the lease until that fails for longer than it holds, or another replica holds
    /// it; then returns why this replica must stop leading.
    pub async fn keep(&self) -> LeaseError {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_take().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    let holder = self
                        .api
                        .get_opt(&self.cfg.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity)
                        .unwrap_or_else(|| "another replica".into());
                    return LeaseError::Lost {
                        namespace: self.cfg.namespace.clone(),
                        name: self.cfg.name.clone(),
                        holder,
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    if last_ok.elapsed() >= self.cfg.duration {
                        return LeaseError::Expired {
                            namespace: self.cfg.namespace.clone(),
                            name: self.cfg.name.clone(),
                            secs: self.cfg.duration.as_secs(),
                        };
                    }
                }
            }
        }
    }

    /// Takes or renews the lease if it is free, expired or ours. `Ok(false)`: someone else
    /// holds it.
    async fn try_take(&self) -> Result<bool, kube::Error> {
        let now = JTime::now();
        let secs = i32::try_from(self.cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(&self.cfg.identity);
        let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| now.as_second() - t.0.as_second() > held_for)
            || spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !mine && !expired {
            return Ok(false);
        }
        let mut lease = current;
        let mut next = spec.clone();
        next.renew_time = Some(MicroTime(now));
        next.lease_duration_seconds = Some(secs);
        if !mine {
            next.holder_identity = Some(self.cfg.identity.clone());
            next.acquire_time = Some(MicroTime(now));
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read above: a concurrent taker gets a 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
