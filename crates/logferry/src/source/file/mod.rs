//! The file and Kubernetes container log sources: files tailed through rotation, with offsets
//! saved only once CloudWatch has accepted the lines before them.
//!
//! `logferry-tail` does the reading (globs, inotify, rotation, identity by inode +
//! fingerprint, line splitting); this module turns lines into events and keeps the books:
//!
//! - `reader.rs`: **a reader thread** (the tailer is synchronous) reads up to
//!   [`CHUNK_EVENTS`](super::CHUNK_EVENTS) lines at a time across all files. Each run of lines
//!   from one file becomes one acknowledgement batch, registered with the position to save once
//!   it is delivered, then the chunk is sent, blocking while the sink's channel is full: the
//!   files wait on disk.
//! - `decode.rs`: **per-file decoding state**: Kubernetes CRI/Docker lines are decoded and
//!   partial (`P`) lines joined; `multiline` (`start_pattern` or a `preset`) joins stack
//!   traces, per container stream.
//! - `pod_labels.rs`: **pod labels** (`kubernetes_api`): a pod seen for the first time is looked
//!   up by `logferry-kubernetes` in the background; its file's events are held (in memory, not
//!   past their position: a crash re-reads them) for at most `kubernetes_api.wait`, then sent
//!   with its labels, or without them if the API has not answered. The reader never waits on
//!   the network itself, and an API that is down makes no file wait at all. An open file looks
//!   its pod up again (still a map lookup) when `logferry-kubernetes` says an answer changed
//!   (its watch saw the pod relabelled) and every `cache_ttl`, so a relabelled pod is followed.
//! - `books.rs` and `checkpoint.rs`: the source's
//!   [`Keeper`](super::positions::Keeper) moves each file's position on a
//!   [`Watermark`](crate::ack::Watermark) over its batches and rewrites the checkpoint file
//!   (`DATA_DIR/file/SOURCE.json`) at most every [`SAVE_EVERY`], with write-temp, fsync,
//!   rename. A file's entry is created when it is opened (so `start = "end"` is not
//!   re-evaluated after a restart) and removed once the file is closed (deleted, or rotated
//!   away and finished) and everything read from it is delivered.
//!
//! **The no-loss rule**: the position registered for a batch is the file's `safe_offset`,
//! never past the first byte of something still held (a partial line, an unfinished multiline
//! event, events waiting for their pod's labels), so a crash re-reads it rather than losing it.
//!
//! The position saved for a batch carries the file's fingerprint as it was when the lines were
//! read, so a file truncated (copytruncate) after that no longer matches and is read from its
//! start after a restart, instead of resuming at an offset that means nothing in it.

mod books;
mod checkpoint;
mod decode;
mod pod_labels;
mod reader;

use std::path::PathBuf;
use std::time::Duration;

use logferry_kubernetes::PodMetadata;
use logferry_tail::tailer::{Tailer, TailerOptions};

use super::positions::Keeper;
use super::SourceContext;
use crate::config::FileSourceConfig;
use books::Books;
pub use checkpoint::checkpoint_path;
use reader::Reader;

/// How often the checkpoint is rewritten at most. It holds every file's position, so it is
/// larger than a journal cursor; what was delivered since the last save is sent again after a
/// crash.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// Runs the source until shutdown.
pub async fn run(ctx: SourceContext, cfg: FileSourceConfig, data_dir: PathBuf) {
    let path = checkpoint_path(&data_dir, &ctx.name);
    let saved = checkpoint::load(&path);
    // `start = "end"` is for the first start only, like the journal's: once a checkpoint
    // exists, a file without a position is one that appeared while logferry was stopped, and
    // all of it is new.
    let start_at_end = cfg.tail.start_at_end && saved.is_none();
    let saved = saved.unwrap_or_default();
    let keeper = Keeper {
        path,
        every: SAVE_EVERY,
        // `logferry tail` reads from the saved offsets but never moves them.
        dry_run: cfg.dry_run,
        what: "file positions",
        stats: ctx.stats.clone(),
    };
    let opts = TailerOptions {
        start_at_end,
        ..cfg.tail.clone()
    };
    let tailer = match Tailer::new(opts, saved) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start tailing");
            return;
        }
    };
    let pods = match &cfg.kubernetes_api {
        None => None,
        Some(k) => {
            // The DaemonSet sets NODE_NAME from the downward API (spec.nodeName).
            let node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
            if node_name.is_none() {
                tracing::warn!(
                    "NODE_NAME is not set: pods are asked for one by one (a GET each, again every \
                     cache_ttl) instead of watching this node's pods; set it from spec.nodeName \
                     (deploy/kubernetes/daemonset.yaml)"
                );
            }
            let opts = logferry_kubernetes::Options {
                kubeconfig: k.kubeconfig.clone(),
                node_name,
                timeout: k.timeout,
                cache_ttl: k.cache_ttl,
                ..logferry_kubernetes::Options::default()
            };
            match PodMetadata::connect(opts).await {
                Ok(m) => {
                    let _ = ctx.stats.kubernetes_api.set(m.stats_handle());
                    Some(m)
                }
                Err(e) => {
                    // The logs matter more than their labels: ship them without.
                    tracing::error!(error = %e, "pod labels are left out");
                    None
                }
            }
        }
    };
    let handle = tokio::runtime::Handle::current();
    let reader_ctx = ctx.clone();
    let thread = format!("file-{}", ctx.name);
    keeper
        .run_reader(thread, Books::default(), move |outcomes, register| {
            Reader::new(reader_ctx, cfg, tailer, pods, outcomes, register, handle).run()
        })
        .await;
}
