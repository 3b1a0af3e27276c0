//! What the pushed sources (syslog, stdin) share: the frame limit and the disk spool.
//!
//! Input that is pushed to logferry cannot be read again, so these sources may put a spool in
//! front of the pipeline; both take the same `spool*` and `max_frame_bytes` keys.

use serde::Deserialize;

use super::diag::Ctx;

/// Default size above which a syslog frame is truncated (and flagged).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// When spooled records reach the disk for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFsync {
    /// fdatasync before an append returns: survives power loss, slower.
    Always,
    /// fdatasync every 100 ms: a power cut may lose the last ~100 ms; kill -9 loses nothing.
    Interval,
}

/// What a full spool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFullPolicy {
    /// Stop reading input (TCP pushes back; datagrams that cannot be queued are counted dropped).
    Block,
    /// Delete the oldest undelivered records to make room (counted and logged).
    DropOldest,
}

/// A pushed source's disk spool.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Bound on the spool's size on disk.
    pub max_bytes: u64,
    /// Durability.
    pub fsync: SpoolFsync,
    /// Behaviour when full.
    pub full_policy: SpoolFullPolicy,
}

pub(super) fn spool_settings(
    ctx: &mut Ctx<'_>,
    name: &str,
    enabled: Option<bool>,
    max_bytes: Option<u64>,
    fsync: Option<SpoolFsync>,
    full: Option<SpoolFullPolicy>,
) -> Option<SpoolSettings> {
    if !enabled.unwrap_or(true) {
        return None;
    }
    let max_bytes = max_bytes.unwrap_or(1 << 30);
    if max_bytes < 1 << 20 {
        ctx.error(
            &["sources", name, "spool_max_bytes"],
            format!("{max_bytes} is too small (at least 1048576)"),
        );
    }
    Some(SpoolSettings {
        max_bytes,
        fsync: fsync.unwrap_or(SpoolFsync::Interval),
        full_policy: full.unwrap_or(SpoolFullPolicy::Block),
    })
}

pub(super) fn frame_limit(ctx: &mut Ctx<'_>, path: &[&str], v: Option<usize>) -> usize {
    let v = v.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
    if v < 64 {
        ctx.error(path, format!("{v} is too small (at least 64 bytes)"));
    }
    v
}
