//! What a source counts, and what kind of source it is.
//!
//! Every source updates its [`SourceStats`] (plain atomics, cheap enough for the hot path);
//! `/metrics` reads them at scrape time. They live here, with the sources, so that a source
//! depends on nothing of the HTTP endpoint that renders them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, OnceLock};

use crate::config::SourceConfig;

/// The `type` of a source, as the config names it and the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `type = "syslog"`
    Syslog,
    /// `type = "stdin"`
    Stdin,
    /// `type = "journald"`
    Journald,
    /// `type = "file"`
    File,
    /// `type = "kubernetes_logs"`
    KubernetesLogs,
}

impl SourceKind {
    /// The kind of the source `config` configures.
    pub fn of(config: &SourceConfig) -> SourceKind {
        match config {
            SourceConfig::Syslog(_) => SourceKind::Syslog,
            SourceConfig::Stdin(_) => SourceKind::Stdin,
            SourceConfig::Journald(_) => SourceKind::Journald,
            SourceConfig::File(f) if f.kubernetes => SourceKind::KubernetesLogs,
            SourceConfig::File(_) => SourceKind::File,
        }
    }

    /// The config's name for it (`type = "..."`, and the `type` label of metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Syslog => "syslog",
            SourceKind::Stdin => "stdin",
            SourceKind::Journald => "journald",
            SourceKind::File => "file",
            SourceKind::KubernetesLogs => "kubernetes_logs",
        }
    }

    /// Whether it tails files (and so has the file metrics).
    pub fn reads_files(self) -> bool {
        matches!(self, SourceKind::File | SourceKind::KubernetesLogs)
    }

    /// Whether it listens on sockets (and so has connection, peer and TLS metrics).
    pub fn listens(self) -> bool {
        self == SourceKind::Syslog
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events read.
    pub events: AtomicU64,
    /// Failed saves of the source's position (journal cursor, file checkpoint), each retried.
    pub state_save_failures: AtomicU64,
    /// Whether the position cannot be saved now.
    pub state_save_failing: AtomicBool,
    /// Message bytes read.
    pub bytes: AtomicU64,
    /// Events truncated to `max_frame_bytes`.
    pub truncated: AtomicU64,
    /// Datagrams dropped because the spool was full.
    pub dropped_spool_full: AtomicU64,
    /// Records dropped by the spool's drop_oldest policy.
    pub dropped_spool_oldest: AtomicU64,
    /// Timestamp (Unix ms) of the newest event read; for the journal, how far behind it is.
    pub last_event_ms: AtomicI64,
    /// File sources: files open now.
    pub files_open: AtomicU64,
    /// File sources: truncations (copytruncate) seen.
    pub files_truncated: AtomicU64,
    /// File sources: files in the checkpoint that were gone at start (unread lines lost).
    pub files_missing: AtomicU64,
    /// File sources: times a file was paused for `max_file_bytes_per_second` /
    /// `max_container_bytes_per_second`.
    pub files_rate_paused: AtomicU64,
    /// Kubernetes sources: lines that were neither CRI nor Docker json-file (sent as they are).
    pub unparsed: AtomicU64,
    /// File sources with `merge_json`: lines starting with `{` that were not merged (invalid,
    /// too deep, too large; sent as they are).
    pub json_merge_failures: AtomicU64,
    /// Kubernetes sources with `kubernetes_api`: events of pods or containers annotated
    /// `logferry.io/exclude` (read and acknowledged, never shipped).
    pub excluded_events: AtomicU64,
    /// Datagrams dropped by `max_events_per_second` / `max_bytes_per_second`.
    pub dropped_rate_limited: AtomicU64,
    /// Time stream connections spent paused by the rate limit, in microseconds.
    pub throttled_us: AtomicU64,
    /// Stream connections open now.
    pub connections_open: AtomicU64,
    /// Stream connections accepted.
    pub connections_accepted: AtomicU64,
    /// Times the listener stopped accepting because `max_connections` were open.
    pub connection_limit_reached: AtomicU64,
    /// Connections closed by `idle_timeout`.
    pub idle_closed: AtomicU64,
    /// Connections or datagrams from peers outside `allowed_peers`.
    pub rejected_peer: AtomicU64,
    /// TLS handshakes that failed (plain text on a TLS port, bad or missing client certificate).
    pub rejected_tls_handshake: AtomicU64,
    /// TLS handshakes not finished within `handshake_timeout`.
    pub rejected_tls_timeout: AtomicU64,
    /// TLS certificate reloads that succeeded.
    pub tls_reloads: AtomicU64,
    /// TLS certificate reloads that failed (the previous certificate stays).
    pub tls_reload_failures: AtomicU64,
    /// Kubernetes sources with `kubernetes_api`: the pod lookups' counters, once the client
    /// has started (the counters only: whoever renders them needs no client).
    pub kubernetes_api: OnceLock<Arc<logferry_kubernetes::Stats>>,
    /// Kubernetes sources: new pods' files whose lines were sent without labels because the
    /// API had not answered within `kubernetes_api.wait`.
    pub pod_wait_expired: AtomicU64,
}
