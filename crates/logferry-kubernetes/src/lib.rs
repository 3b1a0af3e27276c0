//! Pod metadata from the Kubernetes API for events read from container log files.
//!
//! A container's log path already says its namespace, pod name, pod uid and container
//! (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log`); what it does not say is the
//! pod's labels (`app`, `team`, ...), its `logferry.io/` annotations and, when `NODE_NAME` is
//! not set, the node. This crate asks the API server for them.
//!
//! The file reader runs on its own thread and must never wait on the network, so
//! [`PodMetadata::lookup`] is a map lookup under a mutex: the API is asked in the background,
//! and a pod not known yet is answered [`Lookup::Pending`]; the caller decides how long a new
//! pod's lines may wait (logferry holds them for `kubernetes_api.wait`, one second by default,
//! then sends them without labels).
//!
//! Where the answers come from:
//!
//! - **With a node name** ([`Options::node_name`]): one list and watch of the node's pods
//!   (`watch.rs`), whatever the cluster's size, and a change is seen as it happens
//!   ([`PodMetadata::generation`] tells the reader to look again). Lookups wait ([`Lookup::Pending`])
//!   for the first list. A pod the store does not have while the watch is up (a watch event
//!   still on its way, or a pod deleted before logferry started whose logs are still on disk)
//!   is asked for by one `GET` after [`Options::watch_grace`], unless the watch shows it
//!   meanwhile; that answer is not asked again while the watch is up, so a pod costs at most one
//!   `GET`. While the watch is down the store still answers for `cache_ttl` and other pods are
//!   asked by `GET`, as without a node name.
//! - **Without one**: a `GET` per pod, cached for `cache_ttl` (`get.rs`). Only `get` on pods is
//!   needed, but the API server's load grows with the cluster's pods.
//!
//! A pod the API does not know, or knows under another uid (a StatefulSet pod re-created under
//! the same name: the logs on disk belong to the old one), is answered as having no metadata
//! rather than given another pod's labels.
//!
//! Credentials come from `kube`'s standard chain (an explicit kubeconfig, `KUBECONFIG`,
//! `~/.kube/config`, else the pod's service account token, which `kube` re-reads as it is
//! rotated). The token is never logged: errors are reported by their kind and message only.

mod client;
mod get;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, not std's: the same instant outside tests (and on the file reader's thread,
// which has no runtime), and the one a test with paused time moves, so cache and retry
// timings are tested without waiting on the wall clock.
use tokio::time::Instant;

use tokio::sync::mpsc;

use client::ApiServer;
use get::Slot;
use watch::{Store, StoreAnswer, WatchPods};

/// Which pod a log file belongs to, as its path says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid; empty when the path does not carry one (Docker-era
    /// `/var/log/containers` names), then any pod of that name matches.
    pub uid: String,
}

/// What the API adds to a pod's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `metadata.annotations` under [`ANNOTATION_PREFIX`] only (the rest, often large
    /// `kubectl.kubernetes.io/last-applied-configuration` blobs, are not kept in the cache).
    pub annotations: BTreeMap<String, String>,
}

/// The prefix of the annotations logferry reads (`logferry.io/exclude`, ...).
pub const ANNOTATION_PREFIX: &str = "logferry.io/";

/// The `logferry.io/` annotations of `all`.
pub fn logferry_annotations(all: BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.into_iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect()
}

/// The answer of [`PodMetadata::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The pod's metadata.
    Found(Arc<PodMeta>),
    /// The API has no such pod (or the name is another uid's now): there is nothing to add,
    /// now or later.
    NotFound,
    /// No answer to be had now (the API is down, or the last request for this pod failed);
    /// a later lookup may find it.
    Unavailable,
    /// Being asked while the API answers; ask again shortly.
    Pending,
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// A kubeconfig file; `None` uses `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The node whose pods are watched; `None`: each pod is asked for by `GET`.
    pub node_name: Option<String>,
    /// Longest wait for one API request (a watch's start; not its life).
    pub timeout: Duration,
    /// How long a `GET`'s answer is used before it is asked again, how long a deleted pod's
    /// labels are kept, and how long the store is still believed once the watch is down.
    pub cache_ttl: Duration,
    /// How long after a failed request the same pod is asked again.
    pub retry_after: Duration,
    /// `GET` requests in flight at once.
    pub concurrency: usize,
    /// How long a pod missing from the store of a watch that is up is given to show up in it
    /// before it is asked for by `GET`.
    pub watch_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kubeconfig: None,
            node_name: None,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(300),
            retry_after: Duration::from_secs(10),
            concurrency: 4,
            watch_grace: Duration::from_millis(500),
        }
    }
}

/// Why the client could not be set up. Never carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error("no Kubernetes credentials: {0} (set kubernetes_api.kubeconfig, or run in a pod with a service account)")]
    Infer(String),
    /// The HTTP client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(String),
    /// A request failed (unreachable, refused, forbidden, timed out).
    #[error("Kubernetes API: {0}")]
    Request(String),
}

/// Counters for metrics (monotonic unless said) and whether the API answers; shared with
/// whoever renders them through [`PodMetadata::stats_handle`], without the client.
#[derive(Debug, Default)]
pub struct Stats {
    /// Whether the last `GET` got an answer (a pod or "no such pod").
    pub up: AtomicBool,
    /// `GET`s answered with a pod (of the right uid).
    pub found: AtomicU64,
    /// `GET`s answered "no such pod" (or a pod of another uid).
    pub not_found: AtomicU64,
    /// `GET`s that failed or timed out.
    pub failed: AtomicU64,
    /// Lookups answered from the cache or the watch's store.
    pub cache_hits: AtomicU64,
    /// Whether the node's pods are watched (a node name is known).
    pub watching: AtomicBool,
    /// Whether the watch is open and its list current.
    pub watch_up: AtomicBool,
    /// Pods the watch holds now (a gauge).
    pub watch_pods: AtomicU64,
    /// Lists of the node's pods: the first, then after each 410 Gone or lost list.
    pub watch_lists: AtomicU64,
    /// Watches the server ended (its timeout) and that were resumed.
    pub restarts_closed: AtomicU64,
    /// Watches ended by 410 Gone (then listed again).
    pub restarts_gone: AtomicU64,
    /// Watches that failed to start or broke (then resumed after a backoff).
    pub restarts_failed: AtomicU64,
}

/// One answer the background task got for a pod.
#[derive(Debug)]
pub enum Fetched {
    /// The API has the pod (its uid is not checked yet).
    Pod {
        /// `metadata.uid`.
        uid: String,
        /// What the events get.
        meta: PodMeta,
    },
    /// The API has no such pod.
    NotFound,
    /// The request failed or timed out; the text says why.
    Failed(String),
}

/// Where the background task gets pods from: the API server, or a test double of the cache.
pub trait FetchPod: Send + Sync + 'static {
    /// Asks for one pod.
    fn fetch(
        &self,
        pod: PodRef,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + '_>>;
}

pub(crate) struct Shared {
    /// `GET`s' answers.
    cache: Mutex<HashMap<PodRef, Slot>>,
    /// The node's pods, as the watch sees them; `None` without a node name.
    store: Option<Mutex<Store>>,
    queue: mpsc::Sender<get::Ask>,
    stats: Arc<Stats>,
    /// Bumped whenever a lookup's answer may have changed.
    generation: AtomicU64,
    /// The watch has failed and not come back yet (its failures are logged once).
    watch_failing: AtomicBool,
    opts: Options,
}

/// Pod metadata, watched or cached, with background lookups. Cheap to clone.
#[derive(Clone)]
pub struct PodMetadata {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PodMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodMetadata")
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl PodMetadata {
    /// Builds a client from the kubeconfig (or in-cluster) credentials and starts the
    /// background tasks on the current tokio runtime. Does not wait for the API: an API that
    /// is down at start is like one that goes down later.
    pub async fn connect(opts: Options) -> Result<PodMetadata, Error> {
        let server = Arc::new(ApiServer::connect(&opts).await?);
        let watch = opts.node_name.is_some().then(|| server.clone());
        Ok(Self::with_sources(opts, server, watch))
    }

    /// Asks the API once for a pod that does not exist (`logferry check`): "not found" proves
    /// the server is reachable, trusted, and lets these credentials `get` pods; with a node
    /// name, lists one of its pods too, which proves `list`.
    pub async fn check_access(opts: &Options) -> Result<(), Error> {
        let server = ApiServer::connect(opts).await?;
        let probe = PodRef {
            namespace: "kube-system".into(),
            name: "logferry-access-check".into(),
            uid: String::new(),
        };
        match server.fetch(probe).await {
            Fetched::Failed(why) => Err(Error::Request(why)),
            Fetched::NotFound | Fetched::Pod { .. } => server.probe_list().await,
        }
    }

    /// Starts the `GET` task alone over any [`FetchPod`] (the tests' way in).
    pub fn with_fetcher(opts: Options, fetcher: impl FetchPod) -> PodMetadata {
        Self::with_sources(opts, Arc::new(fetcher), None::<Arc<ApiServer>>)
    }

    /// Starts the `GET` task, and the watch when `watch` is given and a node is named.
    pub fn with_sources<F: FetchPod, W: WatchPods>(
        opts: Options,
        fetcher: Arc<F>,
        watch: Option<Arc<W>>,
    ) -> PodMetadata {
        let (queue, rx) = mpsc::channel(1024);
        let node = opts.node_name.clone().filter(|_| watch.is_some());
        let stats = Arc::new(Stats {
            up: AtomicBool::new(true),
            watching: AtomicBool::new(node.is_some()),
            ..Stats::default()
        });
        let shared = Arc::new(Shared {
            cache: Mutex::new(HashMap::new()),
            store: node.as_ref().map(|_| Mutex::new(Store::new())),
            queue,
            stats,
            generation: AtomicU64::new(0),
            watch_failing: AtomicBool::new(false),
            opts,
        });
        tokio::spawn(get::run(Arc::downgrade(&shared), rx, fetcher));
        if let (Some(node), Some(watch)) = (node, watch) {
            tokio::spawn(watch::run(Arc::downgrade(&shared), watch, node));
        }
        PodMetadata { shared }
    }

    /// What is known of `pod`, without waiting; see the module docs.
    pub fn lookup(&self, pod: &PodRef) -> Lookup {
        let watch_up = match &self.shared.store {
            None => false,
            Some(store) => {
                let store = store.lock().unwrap_or_else(|p| p.into_inner());
                match store.answer(pod, Instant::now(), self.shared.opts.cache_ttl) {
                    StoreAnswer::Known(answer) => {
                        self.shared.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return answer;
                    }
                    StoreAnswer::Syncing => return Lookup::Pending,
                    StoreAnswer::Unknown { watch_up } => watch_up,
                }
            }
        };
        self.shared.lookup_by_get(pod, watch_up)
    }

    /// A number that changes whenever a lookup's answer may have: a watch event changed a
    /// pod, or a `GET` brought a new answer. Whoever keeps answers looks again when it moves.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }

    /// Whether the API answers: the watch is open, or (without one) the last `GET` got an
    /// answer.
    pub fn is_healthy(&self) -> bool {
        let stats = &self.shared.stats;
        if stats.watching.load(Ordering::Relaxed) {
            stats.watch_up.load(Ordering::Relaxed)
        } else {
            stats.up.load(Ordering::Relaxed)
        }
    }

    /// Request and cache counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The counters alone, to keep for metrics after the client is gone.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }
}

/// Every test runs on tokio's paused clock (`start_paused`): a sleep advances it as soon as the
/// runtime has nothing else to do, so the 500 ms of a retry or the TTL of a cache entry pass in
/// no real time and a loaded machine cannot stretch a window past what a test expects. Real
/// time is needed only where real I/O is waited on: the API server behind kube-rs, tested end
/// to end in `crates/logferry/tests/kubernetes_api.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// Answers from a table, counting requests; `fail` makes every request fail.
    #[derive(Default)]
    struct Table {
        pods: Mutex<HashMap<String, (String, PodMeta)>>,
        fail: AtomicBool,
        asked: AtomicUsize,
        delay: Mutex<Duration>,
    }

    impl FetchPod for Arc<Table> {
        fn fetch(
            &self,
            pod: PodRef,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + '_>> {
            Box::pin(async move {
                self.asked.fetch_add(1, Ordering::SeqCst);
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if self.fail.load(Ordering::SeqCst) {
                    return Fetched::Failed("connection refused".into());
                }
                match self.pods.lock().unwrap().get(&pod.name) {
                    Some((uid, meta)) => Fetched::Pod {
                        uid: uid.clone(),
                        meta: meta.clone(),
                    },
                    None => Fetched::NotFound,
                }
            })
        }
    }

    fn pod(name: &str, uid: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn meta(app: &str) -> PodMeta {
        PodMeta {
            labels: [("app".to_string(), app.to_string())].into(),
            node_name: Some("node-1".into()),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn only_logferry_annotations_are_kept() {
        let all = [
            ("logferry.io/exclude", "true"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("logferry.io/multiline", "java"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let kept: Vec<_> = logferry_annotations(all).into_keys().collect();
        assert_eq!(kept, ["logferry.io/exclude", "logferry.io/multiline"]);
    }

    async fn settle(m: &PodMetadata, p: &PodRef) -> Lookup {
        for _ in 0..1000 {
            match m.lookup(p) {
                Lookup::Pending => tokio::time::sleep(Duration::from_millis(1)).await,
                ready => return ready,
            }
        }
        panic!("never answered");
    }

    fn setup(opts: Options) -> (Arc<Table>, PodMetadata) {
        let table = Arc::new(Table::default());
        table
            .pods
            .lock()
            .unwrap()
            .insert("web".into(), ("u1".into(), meta("web")));
        let m = PodMetadata::with_fetcher(opts, table.clone());
        (table, m)
    }

    #[tokio::test(start_paused = true)]
    async fn first_lookup_is_pending_then_cached_with_one_request() {
        let (table, m) = setup(Options::default());
        let p = pod("web", "u1");
        assert_eq!(m.lookup(&p), Lookup::Pending);
        assert_eq!(settle(&m, &p).await, Lookup::Found(Arc::new(meta("web"))));
        for _ in 0..10 {
            assert!(matches!(m.lookup(&p), Lookup::Found(_)));
        }
        assert_eq!(table.asked.load(Ordering::SeqCst), 1);
        assert_eq!(m.stats().found.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_pod_and_other_uid_get_no_metadata() {
        let (_, m) = setup(Options::default());
        assert_eq!(settle(&m, &pod("gone", "u9")).await, Lookup::NotFound);
        // Same name, another uid: a re-created pod; the old pod's logs must not get its labels.
        assert_eq!(settle(&m, &pod("web", "u0")).await, Lookup::NotFound);
        // No uid in the path: any pod of that name.
        assert!(matches!(
            settle(&m, &pod("web", "")).await,
            Lookup::Found(_)
        ));
        assert_eq!(m.stats().not_found.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn api_down_answers_at_once_and_retries_later() {
        let (table, m) = setup(Options {
            retry_after: Duration::from_millis(500),
            ..Options::default()
        });
        table.fail.store(true, Ordering::SeqCst);
        let p = pod("web", "u1");
        assert_eq!(settle(&m, &p).await, Lookup::Unavailable);
        assert!(!m.is_healthy());
        // Down: a new pod is not kept waiting.
        assert_eq!(m.lookup(&pod("other", "u2")), Lookup::Unavailable);
        // Not asked again before retry_after (once "other" has been asked)...
        tokio::time::sleep(Duration::from_millis(5)).await;
        let asked = table.asked.load(Ordering::SeqCst);
        assert_eq!(m.lookup(&p), Lookup::Unavailable);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(table.asked.load(Ordering::SeqCst), asked);
        // ...then asked again, and the API is back.
        table.fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(m.lookup(&p), Lookup::Unavailable);
        let mut got = Lookup::Unavailable;
        for _ in 0..1000 {
            got = m.lookup(&p);
            if got != Lookup::Unavailable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(matches!(got, Lookup::Found(_)), "{got:?}");
        assert!(m.is_healthy());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_answer_is_used_while_asked_again() {
        let (table, m) = setup(Options {
            cache_ttl: Duration::from_millis(30),
            ..Options::default()
        });
        let p = pod("web", "u1");
        settle(&m, &p).await;
        table
            .pods
            .lock()
            .unwrap()
            .insert("web".into(), ("u1".into(), meta("web-v2")));
        *table.delay.lock().unwrap() = Duration::from_millis(50);
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Stale: the old labels now, one refresh in flight (not one per lookup).
        for _ in 0..5 {
            assert_eq!(m.lookup(&p), Lookup::Found(Arc::new(meta("web"))));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.lookup(&p), Lookup::Found(Arc::new(meta("web-v2"))));
        assert_eq!(table.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_api_keeps_lookups_instant() {
        let (table, m) = setup(Options::default());
        *table.delay.lock().unwrap() = Duration::from_secs(3600);
        for i in 0..100 {
            assert_eq!(m.lookup(&pod(&format!("p{i}"), "u")), Lookup::Pending);
        }
        // Only `concurrency` requests in flight; the rest wait in the queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(table.asked.load(Ordering::SeqCst), 4);
    }

    /// The node's pods for the watch: `list` answers `pods` (or fails while `down`), each
    /// `watch` opens a stream the test feeds through `feed` (or fails while `down`).
    #[derive(Default)]
    struct Node {
        pods: Mutex<Vec<watch::WatchedPod>>,
        down: AtomicBool,
        lists: AtomicUsize,
        feeds: Mutex<Vec<mpsc::UnboundedSender<watch::Change>>>,
    }

    impl Node {
        fn feed(&self, change: watch::Change) {
            let feeds = self.feeds.lock().unwrap();
            let _ = feeds.last().expect("a watch is open").send(change);
        }
    }

    impl WatchPods for Node {
        fn list(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<watch::Listed, String>> + Send + '_>,
        > {
            Box::pin(async move {
                self.lists.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err("connection refused".into());
                }
                Ok(watch::Listed {
                    resource_version: "10".into(),
                    pods: self.pods.lock().unwrap().clone(),
                })
            })
        }

        fn watch(
            &self,
            _from: String,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<watch::Changes, watch::WatchFailure>>
                    + Send
                    + '_,
            >,
        > {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(watch::WatchFailure::Failed("connection refused".into()));
                }
                let (tx, rx) = mpsc::unbounded_channel();
                self.feeds.lock().unwrap().push(tx);
                let changes = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                });
                Ok(Box::pin(changes) as watch::Changes)
            })
        }
    }

    fn watched(name: &str, uid: &str, app: &str) -> watch::WatchedPod {
        watch::WatchedPod {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            resource_version: "11".into(),
            meta: meta(app),
        }
    }

    /// A watched node holding `web` (u1), a `GET` table holding `web` and `other` (u2).
    fn watched_setup(down: bool) -> (Arc<Table>, Arc<Node>, PodMetadata) {
        let table = Arc::new(Table::default());
        for (name, uid) in [("web", "u1"), ("other", "u2")] {
            table
                .pods
                .lock()
                .unwrap()
                .insert(name.into(), (uid.into(), meta(name)));
        }
        let node = Arc::new(Node::default());
        node.pods.lock().unwrap().push(watched("web", "u1", "web"));
        node.down.store(down, Ordering::SeqCst);
        let opts = Options {
            node_name: Some("node-1".into()),
            ..Options::default()
        };
        let m = PodMetadata::with_sources(opts, Arc::new(table.clone()), Some(node.clone()));
        (table, node, m)
    }

    #[tokio::test(start_paused = true)]
    async fn watched_pods_are_answered_without_a_get() {
        let (table, node, m) = watched_setup(false);
        assert_eq!(
            m.lookup(&pod("web", "u1")),
            Lookup::Pending,
            "before the first list"
        );
        assert_eq!(
            settle(&m, &pod("web", "u1")).await,
            Lookup::Found(Arc::new(meta("web")))
        );
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(matches!(m.lookup(&pod("web", "u1")), Lookup::Found(_)));
        assert_eq!(table.asked.load(Ordering::SeqCst), 0);
        assert_eq!(node.lists.load(Ordering::SeqCst), 1);
        assert!(m.is_healthy());
        assert_eq!(m.stats().watch_pods.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_event_changes_the_answer_and_the_generation() {
        let (_, node, m) = watched_setup(false);
        settle(&m, &pod("web", "u1")).await;
        let before = m.generation();
        node.feed(watch::Change::Applied(watched("web", "u1", "web-v2")));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            m.lookup(&pod("web", "u1")),
            Lookup::Found(Arc::new(meta("web-v2")))
        );
        assert_ne!(
            m.generation(),
            before,
            "whoever keeps answers must look again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_the_watch_lacks_is_asked_once_after_the_grace() {
        let (table, _, m) = watched_setup(false);
        settle(&m, &pod("web", "u1")).await;
        let other = pod("other", "u2");
        assert_eq!(m.lookup(&other), Lookup::Pending);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(table.asked.load(Ordering::SeqCst), 0, "within the grace");
        assert_eq!(
            settle(&m, &other).await,
            Lookup::Found(Arc::new(meta("other")))
        );
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(matches!(m.lookup(&other), Lookup::Found(_)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            table.asked.load(Ordering::SeqCst),
            1,
            "not again while the watch is up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_shown_during_the_grace_costs_no_get() {
        let (table, node, m) = watched_setup(false);
        settle(&m, &pod("web", "u1")).await;
        let late = pod("late", "u3");
        assert_eq!(m.lookup(&late), Lookup::Pending);
        node.feed(watch::Change::Applied(watched("late", "u3", "late")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(m.lookup(&late), Lookup::Found(Arc::new(meta("late"))));
        assert_eq!(table.asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gone_lists_again() {
        let (_, node, m) = watched_setup(false);
        settle(&m, &pod("web", "u1")).await;
        node.pods.lock().unwrap().push(watched("new", "u4", "new"));
        node.feed(watch::Change::Gone);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(node.lists.load(Ordering::SeqCst), 2);
        assert_eq!(
            m.lookup(&pod("new", "u4")),
            Lookup::Found(Arc::new(meta("new")))
        );
        assert_eq!(m.stats().restarts_gone.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_watch_is_down_pods_are_asked_for_at_once() {
        let (table, node, m) = watched_setup(true);
        assert_eq!(
            settle(&m, &pod("web", "u1")).await,
            Lookup::Found(Arc::new(meta("web")))
        );
        assert_eq!(table.asked.load(Ordering::SeqCst), 1, "by GET");
        assert!(!m.is_healthy());
        assert!(node.lists.load(Ordering::SeqCst) >= 1);
        // The watch comes back (after its backoff) and takes over.
        node.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(m.is_healthy());
        node.feed(watch::Change::Applied(watched("web", "u1", "web-v2")));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            m.lookup(&pod("web", "u1")),
            Lookup::Found(Arc::new(meta("web-v2")))
        );
        assert_eq!(table.asked.load(Ordering::SeqCst), 1);
    }
}
