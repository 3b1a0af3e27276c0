//! The API server through kube-rs: a pod `GET` ([`FetchPod`]) and the node's pods listed and
//! watched ([`WatchPods`]), turned into this crate's types at once so nothing else sees kube's.
//!
//! Two clients share one configuration: the `GET`s' has a read timeout of `timeout`, so a
//! stalled answer counts as a failure; the watch's has none, since a watch on a quiet node
//! sends nothing for minutes by design (the watch loop bounds its silence itself).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::watch::{Change, Changes, Listed, WatchFailure, WatchPods, WatchedPod};
use crate::{logferry_annotations, Error, FetchPod, Fetched, Options, PodMeta, PodRef};

/// How long the API server keeps one watch open (`timeoutSeconds`); it then ends it and the
/// watch resumes from the last resourceVersion seen, as client-go and kube-runtime do.
pub(crate) const WATCH_SECONDS: u32 = 290;

/// The API server, through `kube`.
pub(crate) struct ApiServer {
    client: kube::Client,
    watch_client: kube::Client,
    timeout: Duration,
    /// `spec.nodeName=NODE`, when a node is known.
    node_selector: Option<String>,
}

impl ApiServer {
    /// A client from `opts`' kubeconfig, or the inferred one.
    pub(crate) async fn connect(opts: &Options) -> Result<ApiServer, Error> {
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
        config.write_timeout = Some(opts.timeout);
        let mut watch_config = config.clone();
        watch_config.read_timeout = None;
        config.read_timeout = Some(opts.timeout);
        let client = kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
        let watch_client =
            kube::Client::try_from(watch_config).map_err(|e| Error::Client(e.to_string()))?;
        Ok(ApiServer {
            client,
            watch_client,
            timeout: opts.timeout,
            node_selector: opts
                .node_name
                .as_ref()
                .map(|node| format!("spec.nodeName={node}")),
        })
    }

    /// Lists at most one of the node's pods: proves `list` on pods (`logferry check`).
    pub(crate) async fn probe_list(&self) -> Result<(), Error> {
        let Some(fields) = &self.node_selector else {
            return Ok(());
        };
        let api: kube::Api<Pod> = kube::Api::all(self.client.clone());
        let lp = ListParams::default().fields(fields).limit(1);
        match tokio::time::timeout(self.timeout, api.list(&lp)).await {
            Err(_) => Err(Error::Request(self.no_answer())),
            Ok(Err(e)) => Err(Error::Request(e.to_string())),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn no_answer(&self) -> String {
        format!("no answer within {}s", self.timeout.as_secs_f64())
    }

    fn node_pods(&self, client: &kube::Client) -> (kube::Api<Pod>, String) {
        let fields = self.node_selector.clone().unwrap_or_default();
        (kube::Api::all(client.clone()), fields)
    }
}

impl FetchPod for ApiServer {
    fn fetch(
        &self,
        pod: PodRef,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + '_>> {
        Box::pin(async move {
            let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &pod.namespace);
            match tokio::time::timeout(self.timeout, api.get_opt(&pod.name)).await {
                Err(_) => Fetched::Failed(self.no_answer()),
                Ok(Err(e)) => Fetched::Failed(e.to_string()),
                Ok(Ok(None)) => Fetched::NotFound,
                Ok(Ok(Some(p))) => {
                    let p = watched(p);
                    Fetched::Pod {
                        uid: p.uid,
                        meta: p.meta,
                    }
                }
            }
        })
    }
}

impl WatchPods for ApiServer {
    fn list(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Listed, String>> + Send + '_>>
    {
        Box::pin(async move {
            let (api, fields) = self.node_pods(&self.client);
            // No resourceVersion: a consistent list, as kube-runtime's default; after a 410
            // an older cached list could be too old again.
            let lp = ListParams::default().fields(&fields);
            match tokio::time::timeout(self.timeout, api.list(&lp)).await {
                Err(_) => Err(self.no_answer()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(list)) => Ok(Listed {
                    resource_version: list.metadata.resource_version.unwrap_or_default(),
                    pods: list.items.into_iter().map(watched).collect(),
                }),
            }
        })
    }

    fn watch(
        &self,
        from: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Changes, WatchFailure>> + Send + '_>,
    > {
        Box::pin(async move {
            let (api, fields) = self.node_pods(&self.watch_client);
            let wp = WatchParams::default()
                .fields(&fields)
                .timeout(WATCH_SECONDS);
            let started = match tokio::time::timeout(self.timeout, api.watch(&wp, &from)).await {
                Err(_) => return Err(WatchFailure::Failed(self.no_answer())),
                Ok(Err(kube::Error::Api(status))) if status.code == 410 => {
                    return Err(WatchFailure::Gone)
                }
                Ok(Err(e)) => return Err(WatchFailure::Failed(e.to_string())),
                Ok(Ok(events)) => events,
            };
            let changes = started.map(|event| match event {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => Change::Applied(watched(p)),
                Ok(WatchEvent::Deleted(p)) => Change::Deleted(watched(p)),
                Ok(WatchEvent::Bookmark(b)) => Change::Bookmark(b.metadata.resource_version),
                Ok(WatchEvent::Error(status)) if status.code == 410 => Change::Gone,
                Ok(WatchEvent::Error(status)) => Change::Failed(format!(
                    "{} ({}): {}",
                    status.reason, status.code, status.message
                )),
                Err(e) => Change::Failed(e.to_string()),
            });
            Ok(Box::pin(changes) as Changes)
        })
    }
}

/// What this crate keeps of a pod.
fn watched(p: Pod) -> WatchedPod {
    WatchedPod {
        namespace: p.metadata.namespace.unwrap_or_default(),
        name: p.metadata.name.unwrap_or_default(),
        uid: p.metadata.uid.unwrap_or_default(),
        resource_version: p.metadata.resource_version.unwrap_or_default(),
        meta: PodMeta {
            labels: p.metadata.labels.unwrap_or_default(),
            node_name: p.spec.and_then(|s| s.node_name),
            annotations: logferry_annotations(p.metadata.annotations.unwrap_or_default()),
        },
    }
}
