//! The stdin source: `journalctl -o short -f | logferry run ...` and any other pipe.
//!
//! Input is framed like a syslog stream (a line per event, or octet-counted syslog frames,
//! detected per frame) and parsed leniently, so plain text and syslog lines both work. At end of
//! input the source waits until every event it read has been delivered or dead-lettered, then
//! ends; when it was the only source, logferry then exits 0. If some event could not be
//! delivered (shutdown came first), the source says how many batches failed.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::syslog::read_stream_with;
use super::SourceContext;
use crate::ack::{AckBatch, AckStatus};
use crate::config::StdinSourceConfig;

/// Reads standard input to its end, then waits for delivery of what was read.
pub async fn run(ctx: SourceContext, cfg: StdinSourceConfig) {
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let mut next_id = 0u64;
    let mut stdin = tokio::io::stdin();
    let shutdown = ctx.shutdown.clone();
    let name: Arc<str> = ctx.name.clone();
    let events = read_stream_with(ctx, &mut stdin, None, cfg.max_frame_bytes, &mut |_| {
        next_id += 1;
        Some(AckBatch::new(next_id, &tx))
    })
    .await;
    drop(tx);
    tracing::info!(source = %name, events, "end of input; waiting for delivery");
    let (mut done, mut failed) = (0u64, 0u64);
    loop {
        tokio::select! {
            o = outcomes.recv() => match o {
                Some(o) => {
                    done += 1;
                    if o.status == AckStatus::Failed {
                        failed += 1;
                    }
                }
                None => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    if failed > 0 || done < next_id {
        tracing::warn!(source = %name, batches = next_id, done, failed, "stdin input not fully delivered");
    } else {
        tracing::info!(source = %name, events, "all stdin input delivered");
    }
}
