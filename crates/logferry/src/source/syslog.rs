//! The syslog source: TCP, UDP, unix stream and unix datagram listeners.
//!
//! Stream transports (TCP, unix stream) get one task per connection: read into a buffer, cut
//! frames with the codec's [`Framer`] (octet counting or newlines, detected per frame), parse,
//! send. A slow sink makes `send` wait, the task stops reading, the kernel's receive buffer
//! fills, and TCP pushes back on the client: no memory grows. A bad frame or a client that
//! vanishes affects only its own connection.
//!
//! Datagram transports cannot push back: datagrams are read as fast as the pipeline takes them
//! and a large receive buffer absorbs bursts; overflow is counted by the kernel, and a datagram
//! the full spool cannot take by logferry (`logferry_source_dropped_total{reason="spool_full"}`).
//!
//! Timestamps without a zone (RFC 3164, `journalctl -o short` lines) are read as UTC, as in
//! containers and on most servers.
//!
//! Listeners may face a network, so input must not be able to knock the agent over:
//! - **Who**: `allowed_peers` is checked before anything is read: a TCP connection from
//!   elsewhere is closed at once, a UDP datagram dropped; both counted
//!   (`logferry_source_rejected_total{reason="peer_not_allowed"}`). TLS (RFC 5425, [`super::tls`])
//!   authenticates the server and, with `client_ca`, the client.
//! - **How many**: at `max_connections` open stream connections the listener stops calling
//!   `accept`, so new clients wait in the kernel's backlog (then in their SYN retries) instead
//!   of costing memory here; a TLS handshake holds a slot and must finish within
//!   `handshake_timeout`.
//! - **How long**: a connection that completes no frame for `idle_timeout` is closed (an idle
//!   client, or a slowloris one trickling bytes that never make a line).
//! - **How much**: `max_events_per_second` / `max_bytes_per_second` ([`super::guard::RateLimit`])
//!   pause stream reading (TCP pushes back, nothing lost, time counted) and drop datagrams over
//!   the rate (counted).
//!
//! Memory per connection is bounded by its read buffer and the framer, which never holds more
//! than `max_frame_bytes` of one frame: an endless line is emitted truncated as soon as it
//! passes the limit and its remainder is skipped as it streams in. So memory is at most about
//! `max_connections x (max_frame_bytes + 64 KiB + TLS buffers)` plus the pipeline's bounded
//! channel, whatever the clients send.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use logferry_spool::Spool;
use logferry_syslog::{datagram_frame, Frame, Framer, ParseOptions};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::guard::{peer_allowed, RateLimit};
use super::spooled::append_frames;
use super::{spooled, syslog_event, Chunk, SourceContext, CHUNK_EVENTS};
use crate::ack::{Ack, AckBatch};
use crate::config::{ListenAddress, SyslogSourceConfig};
use crate::event::now_ms;
use crate::net::Cidr;
use crate::source::stats::SourceStats;
use crate::tls::{Reload, Tls};

const READ_CHUNK: usize = 64 * 1024;
/// How long a stopping connection may keep reading what its client had already sent.
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// A read that is not ready within this while draining means nothing more is buffered.
const DRAIN_READ_WAIT: Duration = Duration::from_millis(50);
const UDP_RECV_BUFFER: usize = 8 * 1024 * 1024;

fn parse_opts() -> ParseOptions {
    ParseOptions {
        now_unix_ms: now_ms(),
        local_utc_offset_secs: 0,
    }
}

/// A bound syslog listener, ready to run. Binding happens before the pipeline starts so that
/// a port in use is a startup error, not a log line.
pub enum Listener {
    /// TCP, with TLS when configured
    Tcp(TcpListener, Option<Arc<Tls>>),
    /// UDP
    Udp(UdpSocket),
    /// Unix stream
    UnixStream(UnixListener),
    /// Unix datagram
    UnixDatagram(UnixDatagram),
}

fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        } else {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
    }
    Ok(())
}

/// A listening socket carried from one pipeline to the next across a SIGHUP reload. Closing
/// a listener resets the connections the kernel had completed into its backlog but nobody had
/// accepted yet, while their clients believe their lines were sent: a reload under load lost
/// such a connection whole (found by `tests/faults.rs`). So a stopping source leaves its socket
/// here ([`keep`]), the next pipeline's [`bind`] of the same address takes it, and
/// [`release_unclaimed`] closes what no source of the new configuration wanted. Connections
/// arriving in between wait in the backlog.
enum Kept {
    Tcp(std::net::TcpListener),
    UnixStream(std::os::unix::net::UnixListener),
    Udp(std::net::UdpSocket),
    UnixDatagram(std::os::unix::net::UnixDatagram),
}

static KEPT: std::sync::Mutex<Vec<(ListenAddress, Kept)>> = std::sync::Mutex::new(Vec::new());

/// Set while the runtime stops a pipeline to start another (SIGHUP); on any other stop a
/// listener is closed at once, so clients are refused rather than queued and then reset.
static RELOADING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the syslog listeners that the pipeline is stopping for a reload: keep the sockets.
pub fn keep_listeners_for_reload() {
    RELOADING.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn keeping_for_reload() -> bool {
    RELOADING.load(std::sync::atomic::Ordering::SeqCst)
}

fn keep(address: ListenAddress, socket: Kept) {
    if let Ok(mut kept) = KEPT.lock() {
        kept.push((address, socket));
    }
}

fn take_kept(address: &ListenAddress) -> Option<Kept> {
    let mut kept = KEPT.lock().ok()?;
    let i = kept.iter().position(|(a, _)| a == address)?;
    Some(kept.swap_remove(i).1)
}

/// Closes the sockets a reload carried over that no source of the new configuration took
/// (a removed source, a changed address): clients are refused again instead of queueing.
pub fn release_unclaimed() {
    RELOADING.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Ok(mut kept) = KEPT.lock() {
        kept.clear();
    }
}

/// Binds the listener for `cfg`, or takes the socket a reload carried over for its address.
pub async fn bind(cfg: &SyslogSourceConfig) -> anyhow::Result<Listener> {
    let kept = take_kept(&cfg.address);
    // Certificates first: a listener that cannot do TLS must not open at all.
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(
            Tls::new(t).context("loading the TLS certificate")?,
        )),
        None => None,
    };
    let listener = match kept {
        Some(kept) => kept.into_listener(tls),
        None => bind_new(&cfg.address, tls).await,
    }
    .with_context(|| format!("listening on {}", cfg.address))?;
    if let Listener::Udp(sock) = &listener {
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket2::SockRef::from(sock).set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    Ok(listener)
}

/// A new socket for `address`, replacing the socket file a unix listener left behind.
async fn bind_new(address: &ListenAddress, tls: Option<Arc<Tls>>) -> anyhow::Result<Listener> {
    Ok(match address {
        ListenAddress::Tcp(a) => Listener::Tcp(TcpListener::bind(a).await?, tls),
        ListenAddress::Udp(a) => Listener::Udp(UdpSocket::bind(a).await?),
        ListenAddress::UnixStream(p) => {
            remove_stale_socket(p)?;
            Listener::UnixStream(UnixListener::bind(p)?)
        }
        ListenAddress::UnixDatagram(p) => {
            remove_stale_socket(p)?;
            Listener::UnixDatagram(UnixDatagram::bind(p)?)
        }
    })
}

impl Kept {
    /// The listener again, in the pipeline that took the socket over (TLS as configured now).
    fn into_listener(self, tls: Option<Arc<Tls>>) -> anyhow::Result<Listener> {
        Ok(match self {
            Kept::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?, tls),
            Kept::Udp(s) => Listener::Udp(UdpSocket::from_std(s)?),
            Kept::UnixStream(l) => Listener::UnixStream(UnixListener::from_std(l)?),
            Kept::UnixDatagram(s) => Listener::UnixDatagram(UnixDatagram::from_std(s)?),
        })
    }
}

impl Listener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l, tls) => l
                .local_addr()
                .map(|a| format!("{}://{a}", if tls.is_some() { "tls" } else { "tcp" }))
                .unwrap_or_default(),
            Listener::Udp(s) => s
                .local_addr()
                .map(|a| format!("udp://{a}"))
                .unwrap_or_default(),
            Listener::UnixStream(_) => "unix".into(),
            Listener::UnixDatagram(_) => "unixgram".into(),
        }
    }
}

/// Where a listener's frames go.
#[derive(Clone)]
pub enum Output {
    /// Straight to the sinks.
    Direct(SourceContext),
    /// Into the disk spool, from which the spool reader feeds the sinks.
    Spool {
        /// The spool.
        spool: Arc<Spool>,
        /// The source's counters (spool drops).
        counters: Arc<SourceStats>,
        /// The source's shutdown token.
        shutdown: CancellationToken,
    },
}

impl Output {
    fn shutdown(&self) -> &CancellationToken {
        match self {
            Output::Direct(ctx) => &ctx.shutdown,
            Output::Spool { shutdown, .. } => shutdown,
        }
    }

    /// Hands frames on; waits while the pipeline (or the spool) is full. `pushback` says
    /// whether the transport can be paused (streams) or must not block (datagrams). Returns
    /// false when nothing downstream is left.
    async fn frames(
        &self,
        frames: Vec<(Frame, Option<Bytes>)>,
        pushback: bool,
        make_batch: &mut (dyn FnMut(usize) -> Option<AckBatch> + Send),
    ) -> bool {
        match self {
            Output::Spool {
                spool,
                counters,
                shutdown,
            } => append_frames(spool, &frames, counters, pushback, shutdown).await,
            Output::Direct(ctx) => {
                let opts = parse_opts();
                let mut frames = frames.into_iter();
                loop {
                    let group: Vec<(Frame, Option<Bytes>)> =
                        frames.by_ref().take(CHUNK_EVENTS).collect();
                    if group.is_empty() {
                        return true;
                    }
                    let batch = make_batch(group.len());
                    let mut chunk: Chunk = Vec::with_capacity(group.len());
                    for (frame, peer) in group {
                        let ack = batch.as_ref().map(AckBatch::ack).unwrap_or_else(Ack::none);
                        chunk.push(syslog_event(frame, peer.as_ref(), &ctx.name, &opts, ack));
                    }
                    if !ctx.send(chunk).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// Per-source guards every connection or datagram passes (see the module documentation).
pub struct Guards {
    allowed_peers: Vec<Cidr>,
    rate: Option<RateLimit>,
    idle_timeout: Option<Duration>,
    stats: Arc<SourceStats>,
}

impl Guards {
    fn new(cfg: &SyslogSourceConfig, stats: Arc<SourceStats>) -> Guards {
        Guards {
            allowed_peers: cfg.allowed_peers.clone(),
            rate: RateLimit::new(cfg.max_events_per_second, cfg.max_bytes_per_second),
            idle_timeout: Some(cfg.idle_timeout),
            stats,
        }
    }

    fn allows(&self, peer: &SocketAddr) -> bool {
        let ok = peer_allowed(&self.allowed_peers, peer.ip());
        if !ok {
            self.stats.rejected_peer.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Runs the source until shutdown. With a spool, a reader task feeds the sinks from it.
pub async fn run(
    ctx: SourceContext,
    cfg: SyslogSourceConfig,
    listener: Listener,
    spool: Option<Arc<Spool>>,
) {
    let max = cfg.max_frame_bytes;
    let guards = Arc::new(Guards::new(&cfg, ctx.stats.clone()));
    let (output, reader) = match spool {
        None => (Output::Direct(ctx.clone()), None),
        Some(spool) => {
            let reader = tokio::spawn(
                spooled::run_reader(ctx.clone(), spool.clone(), CancellationToken::new(), false)
                    .in_current_span(),
            );
            let output = Output::Spool {
                spool,
                counters: ctx.stats.clone(),
                shutdown: ctx.shutdown.clone(),
            };
            (output, Some(reader))
        }
    };
    // The sinks drain once every sender is gone: keep none here beyond `output`.
    drop(ctx);
    // On a reload the socket outlives this pipeline: it is handed to the next one (`Kept`).
    let kept = match listener {
        Listener::Tcp(l, tls) => {
            let l = StreamListener::Tcp(l);
            serve_streams(&output, l, tls, &guards, cfg.max_connections, max).await
        }
        Listener::UnixStream(l) => {
            let l = StreamListener::Unix(l);
            serve_streams(&output, l, None, &guards, cfg.max_connections, max).await
        }
        Listener::Udp(sock) => {
            let sock = DatagramSocket::Udp(sock);
            read_datagrams(&output, &sock, max, &guards).await;
            keeping_for_reload().then(|| sock.into_kept()).flatten()
        }
        Listener::UnixDatagram(sock) => {
            let sock = DatagramSocket::Unix(sock);
            read_datagrams(&output, &sock, max, &guards).await;
            keeping_for_reload().then(|| sock.into_kept()).flatten()
        }
    };
    if let Some(kept) = kept {
        keep(cfg.address.clone(), kept);
    }
    drop(output);
    if let Some(reader) = reader {
        let _ = reader.await;
    }
}

enum StreamListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

impl StreamListener {
    fn into_kept(self) -> Option<Kept> {
        match self {
            StreamListener::Tcp(l) => l.into_std().ok().map(Kept::Tcp),
            StreamListener::Unix(l) => l.into_std().ok().map(Kept::UnixStream),
        }
    }

    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            StreamListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s, peer))
            }
            StreamListener::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
        }
    }
}

/// Decrements the open-connections gauge when a connection task ends, however it ends.
struct OpenConnection(Arc<SourceStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts stream connections until shutdown, at most `max_connections` at a time, one task
/// each; checks the TLS files for changes on the way.
async fn serve_streams(
    output: &Output,
    listener: StreamListener,
    tls: Option<Arc<Tls>>,
    guards: &Arc<Guards>,
    max_connections: usize,
    max_frame_bytes: usize,
) -> Option<Kept> {
    let shutdown = output.shutdown().clone();
    let stats = guards.stats.clone();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut conns = tokio::task::JoinSet::new();
    let mut reload = tokio::time::interval(
        tls.as_ref()
            .map_or(Duration::from_secs(3600), |t| t.reload_interval()),
    );
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut permit = None;
    let mut at_limit = false;
    loop {
        if permit.is_none() {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permit = Some(p),
                Err(_) if !at_limit => {
                    // Stop accepting: the kernel's backlog, then the clients' SYN retries, hold
                    // new connections back instead of our memory.
                    at_limit = true;
                    stats
                        .connection_limit_reached
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        max_connections,
                        "connection limit reached; not accepting until one closes"
                    );
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = reload.tick(), if tls.is_some() => {
                if let Some(t) = &tls {
                    match t.check_reload() {
                        Reload::Reloaded => stats.tls_reloads.fetch_add(1, Ordering::Relaxed),
                        Reload::Failed => stats.tls_reload_failures.fetch_add(1, Ordering::Relaxed),
                        Reload::Unchanged => 0,
                    };
                }
            }
            p = slots.clone().acquire_owned(), if permit.is_none() => {
                permit = p.ok();
                at_limit = false;
            }
            accepted = listener.accept(), if permit.is_some() => match accepted {
                Ok(conn) => {
                    let peer = match &conn {
                        Conn::Tcp(_, peer) => {
                            if !guards.allows(peer) {
                                tracing::debug!(%peer, "peer not in allowed_peers; connection closed");
                                continue;
                            }
                            Some(Bytes::from(peer.to_string()))
                        }
                        Conn::Unix(_) => None,
                    };
                    stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    stats.connections_open.fetch_add(1, Ordering::Relaxed);
                    let open = OpenConnection(stats.clone());
                    let slot = permit.take();
                    let acceptor = tls.as_ref().map(|t| (t.acceptor(), t.handshake_timeout()));
                    let (out, guards) = (output.clone(), guards.clone());
                    conns.spawn(
                        async move {
                            let _held = (slot, open);
                            serve_connection(out, conn, peer, acceptor, &guards, max_frame_bytes)
                                .await
                        }
                        .in_current_span(),
                    );
                }
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Stop accepting before the open connections drain: closed (new clients are refused), or
    // kept for the next pipeline when this is a reload.
    let kept = if keeping_for_reload() {
        listener.into_kept()
    } else {
        drop(listener);
        None
    };
    while conns.join_next().await.is_some() {}
    kept
}

/// One connection: the TLS handshake if any, then frames until EOF, idle timeout or shutdown.
async fn serve_connection(
    output: Output,
    conn: Conn,
    peer: Option<Bytes>,
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    guards: &Guards,
    max_frame_bytes: usize,
) {
    // Boxed: one read loop for the three kinds of stream (a call through a pointer per 64 KiB
    // read costs nothing next to the read).
    let mut stream: Box<dyn AsyncRead + Unpin + Send> = match (conn, tls) {
        (Conn::Unix(s), _) => Box::new(s),
        (Conn::Tcp(s, _), None) => Box::new(s),
        (Conn::Tcp(s, addr), Some((acceptor, timeout))) => {
            let stats = &guards.stats;
            let handshake = tokio::select! {
                r = tokio::time::timeout(timeout, acceptor.accept(s)) => r,
                _ = output.shutdown().cancelled() => return,
            };
            match handshake {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    stats.rejected_tls_handshake.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    stats.rejected_tls_timeout.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    read_stream_guarded(
        &output,
        &mut stream,
        peer,
        max_frame_bytes,
        &mut |_| None,
        Some(guards),
    )
    .await;
}

/// Reads frames from one stream connection until EOF or shutdown. Returns the number of frames
/// read.
pub async fn read_stream<R: AsyncRead + Unpin>(
    output: Output,
    mut reader: R,
    peer: Option<Bytes>,
    max_frame_bytes: usize,
) -> u64 {
    read_stream_with(&output, &mut reader, peer, max_frame_bytes, &mut |_| None).await
}

/// Like [`read_stream`], with `make_batch` giving each chunk's events an acknowledgement batch
/// (called once per chunk, with the chunk's event count; used without a spool only).
pub async fn read_stream_with<R: AsyncRead + Unpin>(
    output: &Output,
    reader: &mut R,
    peer: Option<Bytes>,
    max_frame_bytes: usize,
    make_batch: &mut (dyn FnMut(usize) -> Option<AckBatch> + Send),
) -> u64 {
    read_stream_guarded(output, reader, peer, max_frame_bytes, make_batch, None).await
}

async fn read_stream_guarded<R: AsyncRead + Unpin>(
    output: &Output,
    reader: &mut R,
    peer: Option<Bytes>,
    max_frame_bytes: usize,
    make_batch: &mut (dyn FnMut(usize) -> Option<AckBatch> + Send),
    guards: Option<&Guards>,
) -> u64 {
    let mut framer = Framer::new(max_frame_bytes);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut total = 0u64;
    let mut eof = false;
    let shutdown = output.shutdown().clone();
    let idle_timeout = guards.and_then(|g| g.idle_timeout);
    let rate = guards.and_then(|g| g.rate.as_ref());
    // Idle means no *complete frame*, not no bytes: a client trickling a byte now and then
    // without ever ending a line holds a connection slot just as well as a silent one.
    let mut last_frame = Instant::now();
    // Set when the source is told to stop: from then on only what the kernel already holds for
    // this connection is read (a client that sent its lines and closed must not lose them to a
    // reload or a SIGTERM), for at most DRAIN_FOR, then the connection is closed.
    let mut drain_until: Option<tokio::time::Instant> = None;
    while !eof {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if drain_until.is_none() && shutdown.is_cancelled() {
            drain_until = Some(tokio::time::Instant::now() + DRAIN_FOR);
        }
        let read = if let Some(until) = drain_until {
            let wait =
                DRAIN_READ_WAIT.min(until.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, reader.read_buf(&mut buf)).await {
                Ok(r) => r,
                // Nothing more buffered (or the drain's time is up): what was sent counts, as
                // at EOF.
                Err(_) => Ok(0),
            }
        } else {
            match idle_timeout {
                Some(idle) => {
                    let deadline = tokio::time::Instant::from_std(last_frame + idle);
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, reader.read_buf(&mut buf)) => match r {
                            Ok(r) => r,
                            Err(_) => {
                                if let Some(g) = guards {
                                    g.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                                }
                                tracing::debug!(?idle, "no complete frame within idle_timeout; closing the connection");
                                // What the client did send still counts, as at EOF.
                                Ok(0)
                            }
                        },
                        _ = shutdown.cancelled() => continue,
                    }
                }
                None => tokio::select! {
                    r = reader.read_buf(&mut buf) => r,
                    _ = shutdown.cancelled() => continue,
                },
            }
        };
        let read_bytes = match read {
            Ok(0) => {
                eof = true;
                0
            }
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "read error, closing connection");
                eof = true;
                0
            }
        };
        let mut frames = Vec::new();
        while let Some(f) = framer.decode(&mut buf) {
            frames.push((f, peer.clone()));
        }
        if eof {
            while let Some(f) = framer.decode_eof(&mut buf) {
                frames.push((f, peer.clone()));
            }
        }
        if frames.iter().any(|(f, _)| f.truncated_bytes > 0) {
            tracing::debug!("frame over max_frame_bytes truncated");
        }
        let n_frames = frames.len() as u64;
        total += n_frames;
        if !output.frames(frames, true, make_batch).await {
            return total;
        }
        if n_frames > 0 {
            last_frame = Instant::now();
        }
        if let (Some(rate), Some(g)) = (rate, guards) {
            // Pay for what was read (bytes off the socket, so skipped oversize input costs
            // too); over the rate, stop reading for a while: the client is pushed back.
            let wait = rate.charge(n_frames, read_bytes as u64);
            if !wait.is_zero() && !eof && drain_until.is_none() {
                g.stats
                    .throttled_us
                    .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Stopping: the next turn drains what the client already sent.
                    _ = shutdown.cancelled() => continue,
                }
                last_frame = Instant::now();
            }
        }
    }
    total
}

enum DatagramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DatagramSocket {
    fn into_kept(self) -> Option<Kept> {
        match self {
            DatagramSocket::Udp(s) => s.into_std().ok().map(Kept::Udp),
            DatagramSocket::Unix(s) => s.into_std().ok().map(Kept::UnixDatagram),
        }
    }

    async fn readable(&self) -> std::io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.readable().await,
            DatagramSocket::Unix(s) => s.readable().await,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>)> {
        match self {
            DatagramSocket::Udp(s) => s.try_recv_from(buf).map(|(n, a)| (n, Some(a))),
            DatagramSocket::Unix(s) => s.try_recv_from(buf).map(|(n, _)| (n, None)),
        }
    }
}

async fn read_datagrams(
    output: &Output,
    sock: &DatagramSocket,
    max_frame_bytes: usize,
    guards: &Guards,
) {
    let mut buf = vec![0u8; 65_536];
    let shutdown = output.shutdown().clone();
    loop {
        tokio::select! {
            r = sock.readable() => if let Err(e) = r {
                tracing::error!(error = %e, "socket error");
                return;
            },
            _ = shutdown.cancelled() => return,
        }
        let mut frames = Vec::new();
        // Drain what is queued (up to a chunk) before handing on, so bursts cost one send. The
        // receive count is capped too: a flood of refused (or empty) datagrams must not keep
        // this task from yielding.
        let mut received = 0;
        while frames.len() < CHUNK_EVENTS && received < 4 * CHUNK_EVENTS {
            received += 1;
            match sock.try_recv(&mut buf) {
                Ok((n, peer)) => {
                    // Checked before anything is copied: refused datagrams cost no memory.
                    if peer.is_some_and(|p| !guards.allows(&p)) {
                        continue;
                    }
                    if guards.rate.as_ref().is_some_and(|r| !r.admit(n as u64)) {
                        guards
                            .stats
                            .dropped_rate_limited
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let peer = peer.map(|p| p.to_string());
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let frame = datagram_frame(data, max_frame_bytes);
                    if frame.data.is_empty() {
                        continue;
                    }
                    frames.push((frame, peer.map(Bytes::from)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            }
        }
        if !output.frames(frames, false, &mut |_| None).await {
            return;
        }
    }
}
