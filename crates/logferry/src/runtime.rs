//! Wiring: sinks first, then sources, then wait for a signal or for the sources to finish.
//!
//! Shutdown order is what makes it safe:
//! 1. SIGTERM/SIGINT cancels the sources' token: listeners close, connections stop reading,
//!    stdin stops; each source drops its channel senders.
//! 2. With every sender gone, each sink flushes its partial batches and waits for its requests.
//! 3. If that takes longer than `shutdown_grace`, the sinks' token is cancelled: requests stop
//!    retrying and their events stay unacknowledged (a journal or file source reads them again
//!    after restart; pushed input relies on the spool).
//!
//! Everything that can fail at start (a port in use, a bad name once `{hostname}` is known, no
//! region) fails before any input is accepted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SinkConfig, SourceConfig};
use crate::sink::dead_letter::DeadLetterFile;
use crate::sink::stats::SinkStats;
use crate::sink::{client, request::LogLimiter, CloudWatchSink, Shared};
use crate::source::{self, Chunk, SourceContext};

/// Channel capacity between sources and a sink, in chunks (of up to 1024 events).
const SINK_CHANNEL_CHUNKS: usize = 16;

/// Runs the pipeline described by `config` until a signal, or until every source has ended.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let sink_cancel = CancellationToken::new();
    let source_shutdown = CancellationToken::new();
    let mut sink_tasks = JoinSet::new();
    let mut sink_inputs: Vec<(Vec<String>, mpsc::Sender<Chunk>)> = Vec::new();
    let mut all_stats: Vec<(String, Arc<SinkStats>)> = Vec::new();

    for (name, sink) in &config.sinks {
        let SinkConfig::CloudWatchLogs(cfg) = sink;
        let sdk = client::sdk_config(cfg)
            .await
            .with_context(|| format!("sink `{name}`"))?;
        let region = client::region_of(&sdk)?;
        let need_imds = cfg.log_group.uses_instance_id() || cfg.log_stream.uses_instance_id();
        let host = client::host_info(&region, need_imds).await;
        let group = cfg
            .log_group
            .bind_host(&host)
            .map_err(|e| anyhow::anyhow!("sink `{name}`: log_group: {e}"))?;
        let stream = cfg
            .log_stream
            .bind_host(&host)
            .map_err(|e| anyhow::anyhow!("sink `{name}`: log_stream: {e}"))?;
        let stats = Arc::new(SinkStats::default());
        let shared = Arc::new(Shared {
            client: client::client(&sdk),
            config: cfg.clone(),
            dead_letter: DeadLetterFile::new(cfg.dead_letter_path.clone()),
            stats: stats.clone(),
            cancel: sink_cancel.clone(),
            name: name.clone(),
            log_limiter: LogLimiter::default(),
        });
        tracing::info!(
            sink = %name,
            region = %region,
            log_group = group.as_static().unwrap_or(group.source()),
            log_stream = stream.as_static().unwrap_or(stream.source()),
            "sink ready"
        );
        let (tx, rx) = mpsc::channel(SINK_CHANNEL_CHUNKS);
        sink_inputs.push((cfg.inputs.clone(), tx));
        all_stats.push((name.clone(), stats));
        let sink = CloudWatchSink::new(shared, group, stream);
        sink_tasks.spawn(sink.run(rx));
    }

    let mut source_tasks = JoinSet::new();
    for (name, source) in &config.sources {
        let outputs = sink_inputs
            .iter()
            .filter(|(inputs, _)| inputs.contains(name))
            .map(|(_, tx)| tx.clone())
            .collect();
        let ctx = SourceContext {
            name: name.as_str().into(),
            outputs,
            shutdown: source_shutdown.clone(),
        };
        match source {
            SourceConfig::Syslog(cfg) => {
                let spool = match &cfg.spool {
                    Some(s) => Some(
                        source::spooled::open(&config.data_dir, name, s, cfg.max_frame_bytes)
                            .with_context(|| format!("source `{name}`"))?,
                    ),
                    None => None,
                };
                let listener = source::syslog::bind(cfg)
                    .await
                    .with_context(|| format!("source `{name}`"))?;
                tracing::info!(source = %name, address = %listener.local_addr(), spool = spool.is_some(), "listening");
                source_tasks.spawn(source::syslog::run(ctx, cfg.clone(), listener, spool));
            }
            SourceConfig::Stdin(cfg) => {
                let spool = match &cfg.spool {
                    Some(s) => Some(
                        source::spooled::open(&config.data_dir, name, s, cfg.max_frame_bytes)
                            .with_context(|| format!("source `{name}`"))?,
                    ),
                    None => None,
                };
                source_tasks.spawn(source::stdin::run(ctx, cfg.clone(), spool));
            }
            SourceConfig::Journald(cfg) => {
                tracing::info!(source = %name, directories = ?cfg.directories, "reading the journal");
                source_tasks.spawn(source::journald::run(
                    ctx,
                    cfg.clone(),
                    config.data_dir.clone(),
                ));
            }
        }
    }
    drop(sink_inputs);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping sources, flushing");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping sources, flushing");
                break;
            }
            done = source_tasks.join_next() => match done {
                Some(_) => continue,
                None => {
                    tracing::info!("all sources finished, flushing");
                    break;
                }
            },
        }
    }
    source_shutdown.cancel();
    // One grace period for the whole drain: sources hand over what they hold (spool readers
    // wait for the outcomes of what they sent), sinks flush and finish their requests.
    let grace = config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while source_tasks.join_next().await.is_some() {}
        while sink_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "shutdown grace period over; undelivered events stay unacknowledged (spooled input and journal entries are sent after restart)"
        );
        sink_cancel.cancel();
        while sink_tasks.join_next().await.is_some() {}
        while source_tasks.join_next().await.is_some() {}
    }
    for (name, s) in &all_stats {
        tracing::info!(
            sink = %name,
            received = s.events_received.load(Ordering::Relaxed),
            delivered = s.events_delivered.load(Ordering::Relaxed),
            dead_lettered = s.dead_total(),
            dropped_empty = s.dropped_empty.load(Ordering::Relaxed),
            split_parts = s.split_parts.load(Ordering::Relaxed),
            requests = s.requests.load(Ordering::Relaxed),
            retries = s.retries.load(Ordering::Relaxed),
            throttled = s.throttled.load(Ordering::Relaxed),
            "sink summary"
        );
    }
    Ok(())
}
