//! `[sources.NAME] type = "stdin"`: lines or syslog frames from standard input.

use serde::Deserialize;

use super::diag::Ctx;
use super::pushed::{frame_limit, spool_settings, SpoolFsync, SpoolFullPolicy, SpoolSettings};
use super::SourceConfig;

/// `[sources.NAME] type = "stdin"`
#[derive(Debug, Clone)]
pub struct StdinSourceConfig {
    /// Lines above this are truncated and flagged.
    pub max_frame_bytes: usize,
    /// The disk spool in front of the pipeline.
    pub spool: Option<SpoolSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStdin {
    max_frame_bytes: Option<usize>,
    spool: Option<bool>,
    spool_max_bytes: Option<u64>,
    spool_fsync: Option<SpoolFsync>,
    spool_full_policy: Option<SpoolFullPolicy>,
}

pub(super) fn stdin_config(ctx: &mut Ctx<'_>, name: &str, raw: RawStdin) -> SourceConfig {
    let max_frame_bytes = frame_limit(
        ctx,
        &["sources", name, "max_frame_bytes"],
        raw.max_frame_bytes,
    );
    let spool = spool_settings(
        ctx,
        name,
        raw.spool,
        raw.spool_max_bytes,
        raw.spool_fsync,
        raw.spool_full_policy,
    );
    SourceConfig::Stdin(StdinSourceConfig {
        max_frame_bytes,
        spool,
    })
}
