//! The leader's watches, each folded into an index of what exists, so that the driver learns of
//! every object that went away, even when the watch never showed its deletion.
//!
//! A watch that breaks for longer than the API server keeps events (its watch cache, or etcd's
//! history after a restart) cannot be resumed: kube's `watcher` lists again (`Init`, one
//! `InitApply` per object, `InitDone`). An object deleted in the gap is simply missing from that
//! list. [`Index::fold`] remembers what each watch showed, and at `InitDone` reports what the
//! new list lacks as deleted, as kube's `reflector` store and linkerd's indexes do. An object
//! deleted and created again under the same name in the gap shows as a delete of the old one
//! (told apart by uid) before the new one.
//!
//! The index keeps a trimmed copy of each object (see [`Trim`]): what the driver reads off a
//! deleted object, not its spec or status, so a leader with 10,000 jobs does not hold them
//! twice. kube's own `reflector::Store` keeps whole objects and reports nothing on a re-list,
//! so it serves the webhook (see [`crate::webhook`]) but not this.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::driver::Input;
use crate::metrics::Metrics;

/// What the index keeps of an object: enough for the driver to handle its deletion.
pub type Trim<K> = fn(&K) -> K;

/// A change the driver is told about.
#[derive(Debug, PartialEq)]
pub enum Change<K> {
    Applied(K),
    Deleted(K),
}

/// The objects one watch has shown, by name and namespace.
pub struct Index<K: Resource<DynamicType = ()>> {
    seen: HashMap<ObjectRef<K>, K>,
    /// While a list is under way: the objects it has shown so far.
    listing: Option<HashSet<ObjectRef<K>>>,
    trim: Trim<K>,
}

impl<K: Resource<DynamicType = ()> + Clone> Index<K> {
    /// An index that already holds `listed`: what the leader listed to rebuild its state, so
    /// that the watch's own first list reports what was deleted between the two.
    pub fn new<'a>(trim: Trim<K>, listed: impl IntoIterator<Item = &'a K>) -> Self
    where
        K: 'a,
    {
        let seen = listed
            .into_iter()
            .map(|o| (ObjectRef::from_obj(o), trim(o)))
            .collect();
        Index {
            seen,
            listing: None,
            trim,
        }
    }

    /// Objects the index holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Takes in one watch event and gives the changes it means, in order.
    pub fn fold(&mut self, event: watcher::Event<K>) -> Vec<Change<K>> {
        match event {
            watcher::Event::Apply(o) => self.applied(o),
            watcher::Event::Delete(o) => {
                self.seen.remove(&ObjectRef::from_obj(&o));
                vec![Change::Deleted(o)]
            }
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(ObjectRef::from_obj(&o));
                }
                self.applied(o)
            }
            watcher::Event::InitDone => {
                let Some(listing) = self.listing.take() else {
                    return Vec::new();
                };
                let gone: Vec<ObjectRef<K>> = self
                    .seen
                    .keys()
                    .filter(|r| !listing.contains(r))
                    .cloned()
                    .collect();
                let mut changes: Vec<Change<K>> = gone
                    .into_iter()
                    .filter_map(|r| self.seen.remove(&r))
                    .map(Change::Deleted)
                    .collect();
                // A stable order, whatever the map's.
                changes.sort_by_key(name_of);
                changes
            }
        }
    }

    fn applied(&mut self, o: K) -> Vec<Change<K>> {
        let kept = (self.trim)(&o);
        let replaced = self.seen.insert(ObjectRef::from_obj(&o), kept);
        match replaced {
            // The same name with another uid: the one seen before was deleted in between.
            Some(old) if old.meta().uid.is_some() && old.meta().uid != o.meta().uid => {
                vec![Change::Deleted(old), Change::Applied(o)]
            }
            _ => vec![Change::Applied(o)],
        }
    }
}

fn name_of<K: Resource>(c: &Change<K>) -> (Option<String>, Option<String>) {
    let (Change::Applied(o) | Change::Deleted(o)) = c;
    (o.meta().namespace.clone(), o.meta().name.clone())
}

/// The identity of an object and nothing else: the trim of the kinds whose deletion the driver
/// handles by name.
pub fn identity(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectMeta::default()
    }
}

/// What the index keeps of each kind: identity, and for a job its phase (the jobs gauge is
/// counted down by phase when the core no longer knows the job).
pub mod trim {
    use super::identity;
    use crate::resources::{
        SPLAIJob, SPLAIJobSpec, SPLAIJobStatus, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker,
        SPLAIWorkerSpec,
    };
    use splai_scheduler::api::JobStatus;

    pub fn job(j: &SPLAIJob) -> SPLAIJob {
        let status = j.status.as_ref().map(|s| SPLAIJobStatus {
            job: JobStatus {
                phase: s.job.phase,
                ..JobStatus::default()
            },
            ..SPLAIJobStatus::default()
        });
        SPLAIJob {
            metadata: identity(&j.metadata),
            spec: SPLAIJobSpec::default(),
            status,
        }
    }

    pub fn worker(w: &SPLAIWorker) -> SPLAIWorker {
        SPLAIWorker {
            metadata: identity(&w.metadata),
            spec: SPLAIWorkerSpec::default(),
            status: None,
        }
    }

    /// Policies and routes are few and small: their specs are kept as they are.
    pub fn policy(p: &SPLAIPolicy) -> SPLAIPolicy {
        SPLAIPolicy {
            metadata: identity(&p.metadata),
            ..p.clone()
        }
    }

    pub fn route(r: &SPLAIModelRoute) -> SPLAIModelRoute {
        SPLAIModelRoute {
            metadata: identity(&r.metadata),
            ..r.clone()
        }
    }
}

/// How one resource's watch reaches the driver.
pub struct Feed<K: Resource<DynamicType = ()>> {
    /// The `controller` label of its metrics: `job`, `worker`, `policy` or `route`.
    pub kind: &'static str,
    pub index: Index<K>,
    pub applied: fn(Box<K>) -> Input,
    pub deleted: fn(Box<K>) -> Input,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watches `api` and sends every change to the driver, until the driver is gone.
    pub async fn run(mut self, api: Api<K>, tx: mpsc::Sender<Input>, metrics: Arc<Metrics>) {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let label = [("controller", self.kind)];
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind = self.kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let init_done = matches!(event, watcher::Event::InitDone);
            for change in self.index.fold(event) {
                let input = match change {
                    Change::Applied(o) => (self.applied)(Box::new(o)),
                    Change::Deleted(o) => {
                        if init_done {
                            metrics.gone_at_list.get_or_create(&label).inc();
                        }
                        (self.deleted)(Box::new(o))
                    }
                };
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            if init_done {
                metrics.watch_lists.get_or_create(&label).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::SPLAIPolicy;
    use splai_scheduler::api::PolicySpec;

    fn policy(name: &str, uid: &str) -> SPLAIPolicy {
        let mut p = SPLAIPolicy::new(
            name,
            crate::resources::SPLAIPolicySpec(PolicySpec::default()),
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    use super::trim::policy as trim;

    fn names(changes: &[Change<SPLAIPolicy>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Applied(o) => format!("+{}", o.metadata.name.as_deref().unwrap()),
                Change::Deleted(o) => format!("-{}", o.metadata.name.as_deref().unwrap()),
            })
            .collect()
    }

    fn relist(index: &mut Index<SPLAIPolicy>, objects: &[SPLAIPolicy]) -> Vec<String> {
        let mut changes = index.fold(watcher::Event::Init);
        for o in objects {
            changes.extend(index.fold(watcher::Event::InitApply(o.clone())));
        }
        changes.extend(index.fold(watcher::Event::InitDone));
        names(&changes)
    }

    #[test]
    fn an_object_missing_from_a_relist_is_reported_deleted() {
        let (a, b, c) = (policy("a", "1"), policy("b", "2"), policy("c", "3"));
        let mut index = Index::new(trim, []);
        assert_eq!(relist(&mut index, &[a.clone(), b.clone()]), ["+a", "+b"]);
        assert_eq!(names(&index.fold(watcher::Event::Apply(c.clone()))), ["+c"]);
        assert_eq!(
            relist(&mut index, std::slice::from_ref(&b)),
            ["+b", "-a", "-c"]
        );
        assert_eq!(index.len(), 1);
        assert_eq!(names(&index.fold(watcher::Event::Delete(b))), ["-b"]);
        assert!(index.is_empty());
    }

    #[test]
    fn what_the_leader_listed_before_its_watch_started_counts_as_seen() {
        let (a, b) = (policy("a", "1"), policy("b", "2"));
        let mut index = Index::new(trim, [&a, &b]);
        assert_eq!(relist(&mut index, &[b]), ["+b", "-a"]);
    }

    #[test]
    fn an_object_recreated_under_the_same_name_is_a_delete_then_an_apply() {
        let mut index = Index::new(trim, [&policy("a", "1")]);
        let changes = relist(&mut index, &[policy("a", "2")]);
        assert_eq!(changes, ["-a", "+a"]);
        // An update of the same object is only an apply.
        assert_eq!(
            names(&index.fold(watcher::Event::Apply(policy("a", "2")))),
            ["+a"]
        );
    }

    #[test]
    fn a_deleted_object_reported_after_a_relist_is_the_trimmed_copy() {
        let mut full = policy("a", "1");
        full.metadata.labels = Some([("team".to_owned(), "x".to_owned())].into());
        let mut index = Index::new(trim, [&full]);
        let mut changes = index.fold(watcher::Event::Init);
        changes.extend(index.fold(watcher::Event::InitDone));
        let [Change::Deleted(gone)] = changes.as_slice() else {
            panic!("expected one delete, got {}", changes.len());
        };
        assert_eq!(gone.metadata.labels, None);
        assert_eq!(gone.metadata.uid.as_deref(), Some("1"));
    }
}
