//! Pod metadata from the Kubernetes API for events read from container log files.
//!
//! A container's log path already says its namespace, pod name, pod uid and container
//! (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log`); what it does not say is the
//! pod's labels (`app`, `team`, ...) and, when `NODE_NAME` is not set, the node. This crate
//! asks the API server for them.
//!
//! The file reader runs on its own thread and must never wait on the network, so:
//!
//! - [`PodMetadata::lookup`] is a map lookup under a mutex. A pod seen for the first time is
//!   queued for a background task and answered [`Lookup::Pending`]; the caller decides how long
//!   a new pod's lines may wait (logferry holds them for `kubernetes_api.wait`, one second by
//!   default, then sends them without labels).
//! - The task `GET`s each pod once (`get` on `pods` is the only permission needed; a watch
//!   would need `list` and `watch` on every pod) with a timeout, a few at a time, and caches
//!   the answer for `cache_ttl`; an older answer is still used while it is asked again.
//! - A pod the API does not know, or knows under another uid (a StatefulSet pod re-created
//!   under the same name: the logs on disk belong to the old one), is cached as having no
//!   metadata rather than given another pod's labels.
//! - When a request fails or times out the API is taken as down: lookups of new pods answer
//!   [`Lookup::Unavailable`] at once, so no file waits on an API that is not answering, and
//!   failed pods are asked again after `retry_after`. The first success marks it up again.
//!
//! Credentials come from `kube`'s standard chain (an explicit kubeconfig, `KUBECONFIG`,
//! `~/.kube/config`, else the pod's service account token, which `kube` re-reads as it is
//! rotated). The token is never logged: errors are reported by their kind and message only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

// tokio's clock, not std's: the same instant outside tests (and on the file reader's thread,
// which has no runtime), and the one a test with paused time moves, so cache and retry
// timings are tested without waiting on the wall clock.
use tokio::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{mpsc, Semaphore};

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

impl Lookup {
    fn known(meta: &Option<Arc<PodMeta>>) -> Lookup {
        match meta {
            Some(m) => Lookup::Found(m.clone()),
            None => Lookup::NotFound,
        }
    }
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// A kubeconfig file; `None` uses `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Longest wait for one API request.
    pub timeout: Duration,
    /// How long an answer is used before it is asked again.
    pub cache_ttl: Duration,
    /// How long after a failed request the same pod is asked again.
    pub retry_after: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kubeconfig: None,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(300),
            retry_after: Duration::from_secs(10),
            concurrency: 4,
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

/// Counters for metrics (monotonic) and whether the API answers; shared with whoever renders
/// them through [`PodMetadata::stats_handle`], without the client.
#[derive(Debug, Default)]
pub struct Stats {
    /// Whether the last request got an answer (a pod or "no such pod").
    pub up: AtomicBool,
    /// Requests answered with a pod (of the right uid).
    pub found: AtomicU64,
    /// Requests answered "no such pod" (or a pod of another uid).
    pub not_found: AtomicU64,
    /// Requests that failed or timed out.
    pub failed: AtomicU64,
    /// Lookups answered from the cache.
    pub cache_hits: AtomicU64,
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

/// The API server, through `kube`.
struct ApiServer {
    client: kube::Client,
    timeout: Duration,
}

impl FetchPod for ApiServer {
    fn fetch(
        &self,
        pod: PodRef,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + '_>> {
        Box::pin(async move {
            let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &pod.namespace);
            match tokio::time::timeout(self.timeout, api.get_opt(&pod.name)).await {
                Err(_) => {
                    Fetched::Failed(format!("no answer within {}s", self.timeout.as_secs_f64()))
                }
                Ok(Err(e)) => Fetched::Failed(e.to_string()),
                Ok(Ok(None)) => Fetched::NotFound,
                Ok(Ok(Some(p))) => Fetched::Pod {
                    uid: p.metadata.uid.unwrap_or_default(),
                    meta: PodMeta {
                        labels: p.metadata.labels.unwrap_or_default(),
                        node_name: p.spec.and_then(|s| s.node_name),
                        annotations: logferry_annotations(
                            p.metadata.annotations.unwrap_or_default(),
                        ),
                    },
                },
            }
        })
    }
}

#[derive(Debug)]
enum Slot {
    /// Queued or in flight.
    Asking,
    /// Answered at `at`; `refreshing` while it is asked again.
    Known {
        meta: Option<Arc<PodMeta>>,
        at: Instant,
        refreshing: bool,
    },
    /// The last request failed at `at`.
    Failed { at: Instant },
}

/// Past this many cached pods, answers older than two TTLs are dropped.
const SWEEP_ABOVE: usize = 4096;

struct Shared {
    cache: Mutex<HashMap<PodRef, Slot>>,
    queue: mpsc::Sender<PodRef>,
    stats: Arc<Stats>,
    opts: Options,
}

/// Cached pod metadata with background lookups. Cheap to clone.
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
    /// background task on the current tokio runtime. Does not contact the API: an API that is
    /// down at start is like one that goes down later.
    pub async fn connect(opts: Options) -> Result<PodMetadata, Error> {
        let server = api_server(&opts).await?;
        Ok(Self::with_fetcher(opts, server))
    }

    /// Asks the API once for a pod that does not exist (`logferry check`): "not found" proves
    /// the server is reachable, trusted, and lets these credentials `get` pods.
    pub async fn check_access(opts: &Options) -> Result<(), Error> {
        let server = api_server(opts).await?;
        let probe = PodRef {
            namespace: "kube-system".into(),
            name: "logferry-access-check".into(),
            uid: String::new(),
        };
        match server.fetch(probe).await {
            Fetched::Failed(why) => Err(Error::Request(why)),
            Fetched::NotFound | Fetched::Pod { .. } => Ok(()),
        }
    }

    /// Starts the background task over any [`FetchPod`] (the tests' way in).
    pub fn with_fetcher(opts: Options, fetcher: impl FetchPod) -> PodMetadata {
        let (queue, rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            cache: Mutex::new(HashMap::new()),
            queue,
            stats: Arc::new(Stats {
                up: AtomicBool::new(true),
                ..Stats::default()
            }),
            opts,
        });
        tokio::spawn(run(Arc::downgrade(&shared), rx, Arc::new(fetcher)));
        PodMetadata { shared }
    }

    /// What is known of `pod`, without waiting; see the module docs.
    pub fn lookup(&self, pod: &PodRef) -> Lookup {
        let now = Instant::now();
        let opts = &self.shared.opts;
        let mut cache = self.cache();
        let (answer, ask) = match cache.get_mut(pod) {
            Some(Slot::Known {
                meta,
                at,
                refreshing,
            }) => {
                self.shared.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                let stale = now.duration_since(*at) >= opts.cache_ttl && !*refreshing;
                if stale {
                    *refreshing = true;
                }
                (Lookup::known(meta), stale)
            }
            Some(Slot::Asking) => (self.while_asking(), false),
            Some(slot @ Slot::Failed { .. }) => {
                let again = matches!(slot, Slot::Failed { at } if now.duration_since(*at) >= opts.retry_after);
                if again {
                    *slot = Slot::Asking;
                }
                (Lookup::Unavailable, again)
            }
            None => {
                if cache.len() >= SWEEP_ABOVE {
                    sweep(&mut cache, now, opts.cache_ttl * 2);
                }
                cache.insert(pod.clone(), Slot::Asking);
                (self.while_asking(), true)
            }
        };
        if ask && self.shared.queue.try_send(pod.clone()).is_err() {
            // The queue is full (thousands of new pods at once): answer "nothing" now and let
            // a later lookup ask again.
            cache.remove(pod);
            return Lookup::Unavailable;
        }
        answer
    }

    /// Whether the last request got an answer (a pod or "no such pod").
    pub fn is_healthy(&self) -> bool {
        self.shared.stats.up.load(Ordering::Relaxed)
    }

    /// Request and cache counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The counters alone, to keep for metrics after the client is gone.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    fn while_asking(&self) -> Lookup {
        if self.is_healthy() {
            Lookup::Pending
        } else {
            Lookup::Unavailable
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<PodRef, Slot>> {
        // A panic while holding the lock leaves a consistent map (each change is one insert).
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client for the API server from `opts`' kubeconfig, or the inferred one.
async fn api_server(opts: &Options) -> Result<ApiServer, Error> {
    // kube's TLS takes rustls' process-wide provider, which rustls cannot pick by itself
    // when both `ring` and `aws-lc-rs` are compiled in (the AWS SDK brings the latter).
    // Failing means another one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let bad = |e: kube::config::KubeconfigError| Error::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            };
            let kc = Kubeconfig::read_from(path).map_err(bad)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(bad)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Infer(e.to_string()))?,
    };
    config.connect_timeout = Some(opts.timeout);
    config.read_timeout = Some(opts.timeout);
    config.write_timeout = Some(opts.timeout);
    let client = kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
    let timeout = opts.timeout;
    Ok(ApiServer { client, timeout })
}

fn sweep(cache: &mut HashMap<PodRef, Slot>, now: Instant, older_than: Duration) {
    cache.retain(|_, slot| match slot {
        Slot::Asking => true,
        Slot::Known { at, .. } | Slot::Failed { at } => now.duration_since(*at) < older_than,
    });
}

/// The background task: asks for queued pods, `concurrency` at a time, until every
/// [`PodMetadata`] is dropped.
async fn run(
    shared: std::sync::Weak<Shared>,
    mut rx: mpsc::Receiver<PodRef>,
    fetcher: Arc<dyn FetchPod>,
) {
    let limit = shared.upgrade().map_or(1, |s| s.opts.concurrency.max(1));
    let permits = Arc::new(Semaphore::new(limit));
    while let Some(pod) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        let fetcher = fetcher.clone();
        tokio::spawn(async move {
            let fetched = fetcher.fetch(pod.clone()).await;
            drop(permit);
            if let Some(shared) = shared.upgrade() {
                record(&shared, pod, fetched);
            }
        });
    }
}

fn record(shared: &Shared, pod: PodRef, fetched: Fetched) {
    let now = Instant::now();
    let meta = match fetched {
        Fetched::Failed(why) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            if shared.stats.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    namespace = %pod.namespace,
                    pod = %pod.name,
                    "the Kubernetes API does not answer ({why}); events are sent without pod labels until it does"
                );
            }
            let mut cache = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
            // A stale answer stays more useful than none.
            match cache.get_mut(&pod) {
                Some(Slot::Known { refreshing, at, .. }) => {
                    *refreshing = false;
                    // Not asked again before `retry_after`.
                    *at = now
                        .checked_sub(shared.opts.cache_ttl)
                        .and_then(|t| t.checked_add(shared.opts.retry_after))
                        .unwrap_or(now);
                }
                _ => {
                    cache.insert(pod, Slot::Failed { at: now });
                }
            }
            return;
        }
        Fetched::NotFound => {
            shared.stats.not_found.fetch_add(1, Ordering::Relaxed);
            None
        }
        Fetched::Pod { uid, meta } => {
            if pod.uid.is_empty() || pod.uid == uid {
                shared.stats.found.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(meta))
            } else {
                // The name now belongs to a newer pod; the log is the old one's.
                shared.stats.not_found.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    };
    if !shared.stats.up.swap(true, Ordering::Relaxed) {
        tracing::info!("the Kubernetes API answers again; pod labels are added again");
    }
    let mut cache = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.insert(
        pod,
        Slot::Known {
            meta,
            at: now,
            refreshing: false,
        },
    );
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
}
