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
//!
//! SIGHUP reloads: the new file is validated first (a bad one is logged and ignored, the running
//! pipeline untouched); a good one stops the pipeline the same careful way (cursors saved,
//! spools closed, nothing acknowledged that was not delivered) and starts a new one from it. If
//! the new one cannot start (a port taken, say), the old config is started again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SinkConfig, SourceConfig};
use tracing::Instrument;

use crate::metrics::{self, Registry, SourceEntry};
use crate::sink::dead_letter::DeadLetterFile;
use crate::sink::stats::SinkStats;
use crate::sink::{client, retry::LogLimiter, CloudWatchSink, Shared};
use crate::source::stats::{SourceKind, SourceStats};
use crate::source::{self, SinkInput, SourceContext};

/// Channel capacity between sources and a sink, in chunks (of up to 1024 events, each with
/// its fields: ~0.7 MiB for a journal chunk). Two keep the sink fed while a source reads the
/// next: 8 moved no bench's rate beyond noise and held up to 6 MiB more.
const SINK_CHANNEL_CHUNKS: usize = 2;

/// Process-wide settings that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where `/metrics`, `/health` and `/ready` are served (None: not at all).
    pub metrics_address: Option<String>,
}

/// Why a pipeline ended.
enum Ended {
    /// SIGTERM/SIGINT or all sources finished: exit.
    Stop,
    /// SIGHUP with a valid new config.
    Reload(Box<Config>),
}

/// The registry the metrics endpoint reads; replaced by each pipeline.
type RegistrySlot = Arc<std::sync::Mutex<Arc<Registry>>>;

fn empty_registry(config: &Config) -> Arc<Registry> {
    Arc::new(Registry {
        sources: Vec::new(),
        sinks: Vec::new(),
        stuck_after: config.health_stuck_after,
    })
}

/// Runs logferry until SIGTERM/SIGINT, or until every source has ended; reloads on SIGHUP.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    let slot: RegistrySlot = Arc::new(std::sync::Mutex::new(empty_registry(&config)));
    let metrics_stop = CancellationToken::new();
    if let Some(addr) = &opts.metrics_address {
        let listener = metrics::bind(addr).await?;
        tracing::info!(address = %addr, "serving /metrics, /health and /ready");
        let slot = slot.clone();
        let stop = metrics_stop.clone();
        tokio::spawn(async move { metrics::serve(listener, slot, stop).await });
    }
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    if let Some(every) = crate::sd_notify::watchdog_interval() {
        // Pinged only while the pipeline is not stuck, so systemd restarts a stuck agent.
        let slot = slot.clone();
        let stop = metrics_stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let healthy = slot.lock().map(|r| r.healthy().is_ok()).unwrap_or(true);
                if healthy {
                    crate::sd_notify::notify("WATCHDOG=1");
                }
            }
        });
    }
    let mut config = config;
    let mut previous: Option<Config> = None;
    let result = loop {
        match run_pipeline(&config, &slot, &mut sighup).await {
            Ok(Ended::Stop) => break Ok(()),
            Ok(Ended::Reload(new)) => {
                previous = Some(std::mem::replace(&mut config, *new));
                tracing::info!(config = %config.path.display(), "configuration reloaded");
            }
            Err(e) => match previous.take() {
                Some(old) => {
                    tracing::error!("the new configuration failed to start ({e:#}); going back to the previous one");
                    config = old;
                }
                None => break Err(e),
            },
        }
        if let Ok(mut g) = slot.lock() {
            *g = empty_registry(&config);
        }
    };
    metrics_stop.cancel();
    result
}

/// Opens a pushed source's spool, when it has one.
fn open_spool(
    config: &Config,
    name: &str,
    settings: Option<&crate::config::SpoolSettings>,
    max_frame_bytes: usize,
) -> anyhow::Result<Option<Arc<logferry_spool::Spool>>> {
    settings
        .map(|s| {
            source::spooled::open(&config.data_dir, name, s, max_frame_bytes)
                .with_context(|| format!("source `{name}`"))
        })
        .transpose()
}

/// Makes `data_dir` safe to keep state in before anything is written to it: refuses one that
/// others could read or swap (a link, writable by others, another user's), creates it `0700`,
/// and narrows whatever an earlier run left more open, one log line per path. With
/// `data_dir_group`, that group may read the state (`0750`/`0640`), never write it.
fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    logferry_private_files::share_with_group(config.data_dir_group);
    let tightened = logferry_private_files::prepare_data_dir(&config.data_dir)
        .with_context(|| format!("{}: data_dir", config.path.display()))?;
    for t in tightened {
        tracing::warn!(
            path = %t.path.display(),
            old_mode = %logferry_private_files::mode_string(t.old_mode),
            new_mode = %logferry_private_files::mode_string(t.new_mode),
            "state was more open than logferry keeps it; tightened"
        );
    }
    Ok(())
}

async fn run_pipeline(
    config: &Config,
    slot: &RegistrySlot,
    sighup: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Ended> {
    prepare_data_dir(config)?;
    let sink_cancel = CancellationToken::new();
    let source_shutdown = CancellationToken::new();
    let mut sink_tasks = JoinSet::new();
    let mut sink_inputs: Vec<(Vec<String>, mpsc::Sender<SinkInput>)> = Vec::new();
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
        let (ledger, in_flight_at_stop) =
            crate::sink::ledger::Ledger::open(&config.data_dir.join("ledger"), name);
        let shared = Arc::new(Shared {
            client: client::client(&sdk),
            config: cfg.clone(),
            dead_letter: DeadLetterFile::new(cfg.dead_letter_path.clone()),
            stats: stats.clone(),
            cancel: sink_cancel.clone(),
            name: name.clone(),
            log_limiter: LogLimiter::default(),
            ledger: std::sync::Mutex::new(ledger),
        });
        let span = crate::sink::span(name);
        span.in_scope(|| {
            tracing::info!(
                region = %region,
                log_group = group.as_static().unwrap_or(group.source()),
                log_stream = stream.as_static().unwrap_or(stream.source()),
                "sink ready"
            )
        });
        let (tx, rx) = mpsc::channel(SINK_CHANNEL_CHUNKS);
        sink_inputs.push((cfg.inputs.clone(), tx));
        all_stats.push((name.clone(), stats));
        let sink = CloudWatchSink::new(shared, group, stream).settle_first(in_flight_at_stop);
        sink_tasks.spawn(sink.run(rx).instrument(span));
    }

    let mut source_tasks = JoinSet::new();
    let mut registry_sources = Vec::new();
    for (name, source) in &config.sources {
        let outputs = sink_inputs
            .iter()
            .filter(|(inputs, _)| inputs.contains(name))
            .map(|(_, tx)| tx.clone())
            .collect();
        let stats = Arc::new(SourceStats::default());
        let ctx = SourceContext {
            name: name.as_str().into(),
            outputs,
            shutdown: source_shutdown.clone(),
            stats: stats.clone(),
        };
        let mut spool_handle = None;
        // Everything the source logs, from its start to its last task and thread, is in it.
        let span = source::span(name, SourceKind::of(source));
        match source {
            SourceConfig::Syslog(cfg) => {
                let spool = span.in_scope(|| {
                    open_spool(config, name, cfg.spool.as_ref(), cfg.max_frame_bytes)
                })?;
                let listener = source::syslog::bind(cfg)
                    .await
                    .with_context(|| format!("source `{name}`"))?;
                span.in_scope(|| tracing::info!(address = %listener.local_addr(), spool = spool.is_some(), "listening"));
                spool_handle = spool.clone();
                source_tasks
                    .spawn(source::syslog::run(ctx, cfg.clone(), listener, spool).instrument(span));
            }
            SourceConfig::Stdin(cfg) => {
                let spool = span.in_scope(|| {
                    open_spool(config, name, cfg.spool.as_ref(), cfg.max_frame_bytes)
                })?;
                spool_handle = spool.clone();
                source_tasks.spawn(source::stdin::run(ctx, cfg.clone(), spool).instrument(span));
            }
            SourceConfig::Journald(cfg) => {
                span.in_scope(
                    || tracing::info!(directories = ?cfg.directories, "reading the journal"),
                );
                source_tasks.spawn(
                    source::journald::run(ctx, cfg.clone(), config.data_dir.clone())
                        .instrument(span),
                );
            }
            SourceConfig::File(cfg) => {
                span.in_scope(|| tracing::info!(include = ?cfg.tail.include, "tailing files"));
                source_tasks.spawn(
                    source::file::run(ctx, cfg.clone(), config.data_dir.clone()).instrument(span),
                );
            }
        }
        registry_sources.push(SourceEntry {
            name: name.clone(),
            kind: SourceKind::of(source),
            stats,
            spool: spool_handle,
        });
    }
    // Sockets a reload carried over that this configuration did not take are closed now.
    source::syslog::release_unclaimed();
    if let Ok(mut g) = slot.lock() {
        *g = Arc::new(Registry {
            sources: registry_sources,
            sinks: all_stats.clone(),
            stuck_after: config.health_stuck_after,
        });
    }
    drop(sink_inputs);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    crate::sd_notify::notify("READY=1\nSTATUS=shipping");
    let mut ended = Ended::Stop;
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping sources, flushing");
                break;
            }
            _ = sighup.recv() => match crate::config::load(&config.path) {
                Ok(new) => {
                    tracing::info!("SIGHUP: new configuration is valid; restarting the pipeline with it");
                    ended = Ended::Reload(Box::new(new));
                    // Listening sockets stay open for the next pipeline: connections that
                    // arrive meanwhile wait in the backlog instead of being reset.
                    source::syslog::keep_listeners_for_reload();
                    break;
                }
                Err(errors) => {
                    tracing::error!("SIGHUP: the configuration file has errors; keeping the running one:\n{errors}");
                }
            },
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
    crate::sd_notify::notify(match ended {
        Ended::Stop => "STOPPING=1\nSTATUS=flushing",
        Ended::Reload(_) => "RELOADING=1\nSTATUS=reloading",
    });
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
        let _in_sink = crate::sink::span(name).entered();
        tracing::info!(
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
    // Release the spools (their locks) before a reloaded pipeline opens them again.
    if let Ok(mut g) = slot.lock() {
        *g = empty_registry(config);
    }
    Ok(ended)
}
