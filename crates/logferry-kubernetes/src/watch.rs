//! The node's pods, kept current by one list and a watch (`fieldSelector=spec.nodeName=NODE`).
//!
//! A `GET` per pod, again every `cache_ttl`, costs the API server requests in proportion to the
//! cluster's pods (50,000 pods at 5 minutes: 167 a second) and sees a relabel only after
//! `cache_ttl`. One watch per node costs one list at start and a long-lived request that
//! carries only changes, and a change is seen as it happens. This is what client-go's
//! informers, Vector and Fluent Bit's cached mode do:
//!
//! - list the node's pods, keep the list's `resourceVersion`, watch from it
//!   (`allowWatchBookmarks=true`, so a quiet node still moves the resume point forward);
//! - when the server ends a watch (`timeoutSeconds`), watch again from the last version seen;
//! - on `410 Gone` (the version is older than the server keeps), list again: the new list
//!   replaces the store;
//! - on any other failure, back off (0.5 s doubling to 30 s, jittered) and resume; the first
//!   failure of an episode is logged, and the recovery.
//!
//! This loop is written over kube's `list` and `watch` rather than kube-runtime's `watcher`,
//! which does the same but says nothing when a watch it restarted is established again (its
//! stream yields nothing until a pod changes): whether the watch is up decides here whether a
//! pod missing from the store is asked for by `GET` at once or after a grace, and is exported
//! as a metric.
//!
//! A deleted pod stays in the store for `cache_ttl` (a tombstone): its last lines are often
//! read after it is gone, and they keep its labels.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::{Lookup, PodMeta, PodRef, Shared};

/// A pod as the list and the watch give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`: where a watch resumes after this change.
    pub resource_version: String,
    /// What its events get.
    pub meta: PodMeta,
}

/// A list of the node's pods.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The list's `metadata.resourceVersion`: the watch starts from it.
    pub resource_version: String,
    /// The pods.
    pub pods: Vec<WatchedPod>,
}

/// One event of a watch.
#[derive(Debug, Clone)]
pub enum Change {
    /// `ADDED` or `MODIFIED`.
    Applied(WatchedPod),
    /// `DELETED`.
    Deleted(WatchedPod),
    /// `BOOKMARK`: nothing changed up to this resourceVersion.
    Bookmark(String),
    /// `ERROR` with a 410 `Status`: the version watched from is too old; list again.
    Gone,
    /// Any other error; the watch ends.
    Failed(String),
}

/// A watch's events.
pub type Changes = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// Why a watch did not start.
#[derive(Debug, Clone)]
pub enum WatchFailure {
    /// 410 Gone: list again.
    Gone,
    /// Anything else; the text says what.
    Failed(String),
}

type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where the node's pods come from: the API server, or a test's double.
pub trait WatchPods: Send + Sync + 'static {
    /// Lists the node's pods.
    fn list(&self) -> BoxFuture<'_, Result<Listed, String>>;
    /// Watches the node's pods from resourceVersion `from`.
    fn watch(&self, from: String) -> BoxFuture<'_, Result<Changes, WatchFailure>>;
}

/// How long a watch may send nothing at all before it is taken for dead: the server ends it
/// after `timeoutSeconds` ([`crate::client::WATCH_SECONDS`]), so silence past that is a
/// connection gone without a close.
const IDLE_LIMIT: Duration = Duration::from_secs(crate::client::WATCH_SECONDS as u64 + 15);
/// A watch that ends sooner than this was not a healthy one: the next is started after a
/// backoff, so a server that closes watches at once is not asked in a tight loop.
const SHORT_WATCH: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Whether the store can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The first list is under way.
    Syncing,
    /// Listed, and a watch is open.
    Up,
    /// The last list or watch failed at `since`.
    Down { since: Instant },
}

#[derive(Debug)]
struct Entry {
    namespace: String,
    name: String,
    meta: Arc<PodMeta>,
    /// When the watch (or a list without it) said it was deleted.
    gone_at: Option<Instant>,
}

/// What the store says of a pod.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StoreAnswer {
    /// The watch knows: the pod, or that its name is another pod's now.
    Known(Lookup),
    /// The first list has not come back yet.
    Syncing,
    /// Not in the store, or the store is too old to believe; `watch_up`: the watch is open.
    Unknown { watch_up: bool },
}

/// The node's pods by uid (deleted ones kept for a while), and the uid of the live pod of each
/// name.
#[derive(Debug)]
pub(crate) struct Store {
    by_uid: HashMap<String, Entry>,
    by_name: HashMap<(String, String), String>,
    listed: bool,
    pub(crate) health: Health,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            by_uid: HashMap::new(),
            by_name: HashMap::new(),
            listed: false,
            health: Health::Syncing,
        }
    }

    /// What the store says of `pod`. While the watch is down its contents are still used for
    /// `ttl` (they were current when it went down), as a `GET`'s answer would be.
    pub(crate) fn answer(&self, pod: &PodRef, now: Instant, ttl: Duration) -> StoreAnswer {
        let believed = match self.health {
            Health::Syncing => return StoreAnswer::Syncing,
            Health::Up => true,
            Health::Down { since } => self.listed && now.duration_since(since) < ttl,
        };
        let watch_up = self.health == Health::Up;
        match self.find(pod).filter(|_| believed) {
            Some(known) => StoreAnswer::Known(known),
            None => StoreAnswer::Unknown { watch_up },
        }
    }

    fn find(&self, pod: &PodRef) -> Option<Lookup> {
        let name = (pod.namespace.clone(), pod.name.clone());
        if pod.uid.is_empty() {
            let uid = self.by_name.get(&name)?;
            return self.by_uid.get(uid).map(|e| Lookup::Found(e.meta.clone()));
        }
        match self.by_uid.get(&pod.uid) {
            Some(e) => Some(Lookup::Found(e.meta.clone())),
            // The name is another pod's now (re-created): the logs are the old one's.
            None if self.by_name.contains_key(&name) => Some(Lookup::NotFound),
            None => None,
        }
    }

    /// Pods the watch holds (not counting deleted ones still kept).
    pub(crate) fn live(&self) -> usize {
        self.by_name.len()
    }

    /// An `ADDED` or `MODIFIED` pod; whether what lookups answer changed.
    fn apply(&mut self, p: WatchedPod) -> bool {
        let name = (p.namespace.clone(), p.name.clone());
        let same = self
            .by_uid
            .get(&p.uid)
            .is_some_and(|e| e.gone_at.is_none() && *e.meta == p.meta);
        if same {
            return false;
        }
        self.by_name.insert(name, p.uid.clone());
        self.by_uid.insert(
            p.uid,
            Entry {
                namespace: p.namespace,
                name: p.name,
                meta: Arc::new(p.meta),
                gone_at: None,
            },
        );
        true
    }

    /// A `DELETED` pod: kept, marked gone (see the module docs). Its name stays another
    /// pod's if a pod of that name was added before this one's deletion came.
    fn delete(&mut self, p: WatchedPod, now: Instant) -> bool {
        let name = (p.namespace, p.name);
        if self.by_name.get(&name) == Some(&p.uid) {
            self.by_name.remove(&name);
        }
        let changed = self.by_uid.get(&p.uid).is_none_or(|e| *e.meta != p.meta);
        let entry = self.by_uid.entry(p.uid).or_insert_with(|| Entry {
            namespace: name.0,
            name: name.1,
            meta: Arc::new(PodMeta::default()),
            gone_at: None,
        });
        if changed {
            entry.meta = Arc::new(p.meta);
        }
        entry.gone_at.get_or_insert(now);
        changed
    }

    /// A new list replaces the store; pods it no longer has are kept as deleted.
    fn replace(&mut self, listed: Vec<WatchedPod>, now: Instant) -> bool {
        let mut old = std::mem::take(&mut self.by_uid);
        self.by_name.clear();
        let mut changed = false;
        for p in listed {
            let kept = old.remove(&p.uid);
            changed |= kept.is_none_or(|e| e.gone_at.is_some() || *e.meta != p.meta);
            self.apply(p);
        }
        for (uid, mut e) in old {
            e.gone_at.get_or_insert(now);
            self.by_uid.insert(uid, e);
        }
        self.listed = true;
        changed
    }

    /// Forgets pods deleted more than `ttl` ago.
    fn sweep(&mut self, now: Instant, ttl: Duration) {
        self.by_uid
            .retain(|_, e| e.gone_at.is_none_or(|at| now.duration_since(at) < ttl));
        // by_name holds live pods only.
        debug_assert!(self
            .by_name
            .iter()
            .all(|(n, uid)| self
                .by_uid
                .get(uid)
                .is_some_and(|e| (&e.namespace, &e.name) == (&n.0, &n.1))));
    }
}

/// 0.5 s doubling to 30 s, each wait drawn from its upper half so nodes do not retry in step.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        d / 2 + Duration::from_nanos(random % (d.as_nanos() as u64 / 2).max(1))
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// How a watch ended.
enum Ended {
    /// The server closed it (its timeout), or it went silent: resume.
    Closed,
    /// 410 Gone: list again.
    Gone,
    /// An error.
    Failed(String),
}

/// Applies `f` to the store, bumping the generation when it says lookups' answers changed.
fn update(shared: &Shared, f: impl FnOnce(&mut Store, Instant) -> bool) {
    let now = Instant::now();
    let Some(store) = &shared.store else {
        return;
    };
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    if f(&mut s, now) {
        shared.generation.fetch_add(1, Ordering::Relaxed);
    }
    shared
        .stats
        .watch_pods
        .store(s.live() as u64, Ordering::Relaxed);
}

/// The watch is open (again): logs a recovery once.
fn mark_up(shared: &Shared, node: &str) {
    update(shared, |s, _| {
        s.health = Health::Up;
        false
    });
    shared.watch_failing.store(false, Ordering::Relaxed);
    if !shared.stats.watch_up.swap(true, Ordering::Relaxed) {
        tracing::info!(
            node,
            "watching this node's pods; label changes are followed as they happen"
        );
    }
}

/// A list or watch failed: logged once per episode.
fn mark_down(shared: &Shared, node: &str, why: &str) {
    update(shared, |s, now| {
        if !matches!(s.health, Health::Down { .. }) {
            s.health = Health::Down { since: now };
        }
        false
    });
    let was_up = shared.stats.watch_up.swap(false, Ordering::Relaxed);
    let first = was_up || !shared.watch_failing.swap(true, Ordering::Relaxed);
    if first {
        tracing::warn!(
            node,
            "the watch of this node's pods failed ({why}); retrying with backoff, and pods it has not seen are asked for one by one meanwhile"
        );
    }
}

/// Lists and watches until every [`crate::PodMetadata`] is dropped (a strong reference is taken
/// only between awaits).
pub(crate) async fn run(shared: Weak<Shared>, source: Arc<dyn WatchPods>, node: String) {
    let mut backoff = Backoff::new();
    let mut from: Option<String> = None;
    loop {
        let resume = match from.take() {
            Some(rv) => rv,
            None => {
                match shared.upgrade() {
                    Some(s) => s.stats.watch_lists.fetch_add(1, Ordering::Relaxed),
                    None => return,
                };
                let listed = source.list().await;
                let Some(s) = shared.upgrade() else { return };
                match listed {
                    Ok(l) => {
                        let ttl = s.opts.cache_ttl;
                        update(&s, |store, now| {
                            let changed = store.replace(l.pods, now);
                            store.sweep(now, ttl);
                            changed
                        });
                        backoff.reset();
                        l.resource_version
                    }
                    Err(why) => {
                        mark_down(&s, &node, &why);
                        drop(s);
                        tokio::time::sleep(backoff.wait()).await;
                        continue;
                    }
                }
            }
        };
        let started = source.watch(resume.clone()).await;
        let Some(s) = shared.upgrade() else { return };
        let mut changes = match started {
            Ok(changes) => changes,
            Err(WatchFailure::Gone) => {
                s.stats.restarts_gone.fetch_add(1, Ordering::Relaxed);
                drop(s);
                tokio::time::sleep(backoff.wait()).await;
                continue;
            }
            Err(WatchFailure::Failed(why)) => {
                s.stats.restarts_failed.fetch_add(1, Ordering::Relaxed);
                mark_down(&s, &node, &why);
                drop(s);
                from = Some(resume);
                tokio::time::sleep(backoff.wait()).await;
                continue;
            }
        };
        mark_up(&s, &node);
        drop(s);
        let opened = Instant::now();
        let mut at = resume;
        let ended = loop {
            let next = tokio::time::timeout(IDLE_LIMIT, changes.next()).await;
            let Some(s) = shared.upgrade() else { return };
            let ttl = s.opts.cache_ttl;
            match next {
                Err(_) | Ok(None) => break Ended::Closed,
                Ok(Some(Change::Applied(p))) => {
                    at.clone_from(&p.resource_version);
                    update(&s, |store, _| store.apply(p));
                }
                Ok(Some(Change::Deleted(p))) => {
                    at.clone_from(&p.resource_version);
                    update(&s, |store, now| {
                        store.sweep(now, ttl);
                        store.delete(p, now)
                    });
                }
                Ok(Some(Change::Bookmark(rv))) => at = rv,
                Ok(Some(Change::Gone)) => break Ended::Gone,
                Ok(Some(Change::Failed(why))) => break Ended::Failed(why),
            }
            backoff.reset();
        };
        drop(changes);
        let Some(s) = shared.upgrade() else { return };
        match ended {
            Ended::Closed => {
                s.stats.restarts_closed.fetch_add(1, Ordering::Relaxed);
                from = Some(at);
                if opened.elapsed() < SHORT_WATCH {
                    drop(s);
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
            Ended::Gone => {
                s.stats.restarts_gone.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    node,
                    "the pod watch's resourceVersion expired (410); listing again"
                );
                if opened.elapsed() < SHORT_WATCH {
                    drop(s);
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
            Ended::Failed(why) => {
                s.stats.restarts_failed.fetch_add(1, Ordering::Relaxed);
                mark_down(&s, &node, &why);
                drop(s);
                from = Some(at);
                tokio::time::sleep(backoff.wait()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, app: &str) -> WatchedPod {
        WatchedPod {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            resource_version: "1".into(),
            meta: PodMeta {
                labels: [("app".to_string(), app.to_string())].into(),
                node_name: Some("node-1".into()),
                annotations: Default::default(),
            },
        }
    }

    fn of(name: &str, uid: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn app(answer: StoreAnswer) -> Option<String> {
        match answer {
            StoreAnswer::Known(Lookup::Found(m)) => m.labels.get("app").cloned(),
            _ => None,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn listed(pods: Vec<WatchedPod>) -> (Store, Instant) {
        let now = Instant::now();
        let mut s = Store::new();
        s.replace(pods, now);
        s.health = Health::Up;
        (s, now)
    }

    #[test]
    fn nothing_is_answered_before_the_first_list() {
        let s = Store::new();
        assert_eq!(
            s.answer(&of("web", "u1"), Instant::now(), TTL),
            StoreAnswer::Syncing
        );
    }

    #[test]
    fn a_name_taken_by_another_uid_is_not_the_pod_of_the_old_logs() {
        let (s, now) = listed(vec![pod("db-0", "new", "db")]);
        assert_eq!(
            s.answer(&of("db-0", "old"), now, TTL),
            StoreAnswer::Known(Lookup::NotFound)
        );
        assert_eq!(
            app(s.answer(&of("db-0", "new"), now, TTL)),
            Some("db".into())
        );
        assert_eq!(
            app(s.answer(&of("db-0", ""), now, TTL)),
            Some("db".into()),
            "no uid: the name's pod"
        );
        assert_eq!(
            s.answer(&of("other", "u9"), now, TTL),
            StoreAnswer::Unknown { watch_up: true }
        );
    }

    #[test]
    fn a_deleted_pod_keeps_its_labels_for_the_ttl() {
        let (mut s, now) = listed(vec![pod("web", "u1", "web")]);
        assert!(
            !s.delete(pod("web", "u1", "web"), now),
            "same labels: no change"
        );
        assert_eq!(s.live(), 0);
        assert_eq!(
            app(s.answer(&of("web", "u1"), now, TTL)),
            Some("web".into())
        );
        s.sweep(now + TTL, TTL);
        assert_eq!(
            s.answer(&of("web", "u1"), now + TTL, TTL),
            StoreAnswer::Unknown { watch_up: true }
        );
    }

    #[test]
    fn a_pod_recreated_before_the_old_ones_deletion_keeps_its_name() {
        let (mut s, now) = listed(vec![pod("db-0", "old", "db")]);
        s.apply(pod("db-0", "new", "db-v2"));
        s.delete(pod("db-0", "old", "db"), now);
        assert_eq!(
            app(s.answer(&of("db-0", ""), now, TTL)),
            Some("db-v2".into())
        );
        assert_eq!(
            app(s.answer(&of("db-0", "old"), now, TTL)),
            Some("db".into()),
            "its last lines"
        );
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn a_new_list_replaces_the_store_and_keeps_vanished_pods_as_deleted() {
        let (mut s, now) = listed(vec![pod("a", "ua", "a"), pod("b", "ub", "b")]);
        assert!(
            !s.replace(vec![pod("a", "ua", "a")], now),
            "b vanished: still answered"
        );
        assert_eq!(app(s.answer(&of("b", "ub"), now, TTL)), Some("b".into()));
        assert_eq!(s.live(), 1);
        assert!(s.replace(vec![pod("a", "ua", "a2")], now), "relabelled");
        assert_eq!(app(s.answer(&of("a", "ua"), now, TTL)), Some("a2".into()));
    }

    #[test]
    fn a_store_down_longer_than_the_ttl_is_not_believed() {
        let (mut s, now) = listed(vec![pod("web", "u1", "web")]);
        s.health = Health::Down { since: now };
        assert_eq!(
            app(s.answer(&of("web", "u1"), now, TTL)),
            Some("web".into())
        );
        assert_eq!(
            s.answer(&of("web", "u1"), now + TTL, TTL),
            StoreAnswer::Unknown { watch_up: false }
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.wait()).collect();
        assert!(waits[0] >= BACKOFF_MIN / 2 && waits[0] <= BACKOFF_MIN);
        assert!(waits[9] >= BACKOFF_MAX / 2 && waits[9] <= BACKOFF_MAX);
        b.reset();
        assert!(b.wait() <= BACKOFF_MIN);
    }
}
