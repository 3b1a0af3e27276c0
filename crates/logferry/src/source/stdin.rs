//! The stdin source: `journalctl -o short -f | logferry run ...` and any other pipe.
//!
//! Input is framed like a syslog stream (a line per event, or octet-counted syslog frames,
//! detected per frame) and parsed leniently, so plain text and syslog lines both work. With the
//! spool (the default), lines are on disk before more is read, and at end of input the source
//! keeps feeding the sinks until everything spooled is delivered. Without it, the source waits
//! for the acknowledgements of what it read. Either way, when stdin was the only source,
//! logferry exits 0 only once CloudWatch has it all.

use std::sync::Arc;

use logferry_spool::Spool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::syslog::{read_stream_with, Output};
use super::{spooled, SourceContext};
use crate::ack::{AckBatch, AckStatus};
use crate::config::StdinSourceConfig;

/// Reads standard input to its end, then waits for delivery of what was read.
pub async fn run(ctx: SourceContext, cfg: StdinSourceConfig, spool: Option<Arc<Spool>>) {
    let mut stdin = tokio::io::stdin();
    if let Some(spool) = spool {
        let input_done = CancellationToken::new();
        let reader = tokio::spawn(
            spooled::run_reader(ctx.clone(), spool.clone(), input_done.clone(), true)
                .in_current_span(),
        );
        let output = Output::Spool {
            spool,
            counters: ctx.stats.clone(),
            shutdown: ctx.shutdown.clone(),
        };
        drop(ctx);
        let events = read_stream_with(&output, &mut stdin, None, cfg.max_frame_bytes, &mut |_| {
            None
        })
        .await;
        drop(output);
        input_done.cancel();
        tracing::info!(events, "end of input; delivering what is spooled");
        let _ = reader.await;
        return;
    }

    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let mut next_id = 0u64;
    let shutdown = ctx.shutdown.clone();
    let output = Output::Direct(ctx);
    let events = read_stream_with(&output, &mut stdin, None, cfg.max_frame_bytes, &mut |_| {
        next_id += 1;
        Some(AckBatch::new(next_id, &tx))
    })
    .await;
    drop(output);
    drop(tx);
    tracing::info!(events, "end of input; waiting for delivery");
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
        tracing::warn!(
            batches = next_id,
            done,
            failed,
            "stdin input not fully delivered"
        );
    } else {
        tracing::info!(events, "all stdin input delivered");
    }
}
