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

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use logferry_spool::Spool;
use logferry_syslog::{datagram_frame, Frame, Framer, ParseOptions};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio_util::sync::CancellationToken;

use super::spooled::append_frames;
use super::{spooled, syslog_event, Chunk, SourceContext, CHUNK_EVENTS};
use crate::ack::{Ack, AckBatch};
use crate::config::{ListenAddress, SyslogSourceConfig};
use crate::event::now_ms;
use crate::metrics::SourceStats;

const READ_CHUNK: usize = 64 * 1024;
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
    /// TCP
    Tcp(TcpListener),
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

/// Binds the listener for `cfg`.
pub async fn bind(cfg: &SyslogSourceConfig) -> anyhow::Result<Listener> {
    Ok(match &cfg.address {
        ListenAddress::Tcp(a) => Listener::Tcp(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("listening on tcp://{a}"))?,
        ),
        ListenAddress::Udp(a) => {
            let sock = UdpSocket::bind(a)
                .await
                .with_context(|| format!("listening on udp://{a}"))?;
            let s2 = socket2::SockRef::from(&sock);
            // Best effort: the kernel caps it at net.core.rmem_max.
            let _ = s2.set_recv_buffer_size(UDP_RECV_BUFFER);
            Listener::Udp(sock)
        }
        ListenAddress::UnixStream(p) => {
            remove_stale_socket(p)?;
            Listener::UnixStream(
                UnixListener::bind(p)
                    .with_context(|| format!("listening on unix://{}", p.display()))?,
            )
        }
        ListenAddress::UnixDatagram(p) => {
            remove_stale_socket(p)?;
            Listener::UnixDatagram(
                UnixDatagram::bind(p)
                    .with_context(|| format!("listening on unixgram://{}", p.display()))?,
            )
        }
    })
}

impl Listener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp://{a}"))
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
        /// The source's name.
        name: Arc<str>,
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

    fn name(&self) -> &Arc<str> {
        match self {
            Output::Direct(ctx) => &ctx.name,
            Output::Spool { name, .. } => name,
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
                name,
                spool,
                counters,
                shutdown,
            } => append_frames(name, spool, &frames, counters, pushback, shutdown).await,
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

/// Runs the source until shutdown. With a spool, a reader task feeds the sinks from it.
pub async fn run(
    ctx: SourceContext,
    cfg: SyslogSourceConfig,
    listener: Listener,
    spool: Option<Arc<Spool>>,
) {
    let max = cfg.max_frame_bytes;
    let (output, reader) = match spool {
        None => (Output::Direct(ctx.clone()), None),
        Some(spool) => {
            let reader = tokio::spawn(spooled::run_reader(
                ctx.clone(),
                spool.clone(),
                CancellationToken::new(),
                false,
            ));
            let output = Output::Spool {
                name: ctx.name.clone(),
                spool,
                counters: ctx.stats.clone(),
                shutdown: ctx.shutdown.clone(),
            };
            (output, Some(reader))
        }
    };
    // The sinks drain once every sender is gone: keep none here beyond `output`.
    drop(ctx);
    let shutdown = output.shutdown().clone();
    let name = output.name().clone();
    match listener {
        Listener::Tcp(l) => {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = l.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let out = output.clone();
                            let peer = Bytes::from(peer.to_string());
                            conns.spawn(async move { read_stream(out, stream, Some(peer), max).await });
                        }
                        Err(e) => {
                            // EMFILE and friends: wait a little rather than spin.
                            tracing::warn!(source = %name, "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                }
            }
            drop(l);
            while conns.join_next().await.is_some() {}
        }
        Listener::UnixStream(l) => {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = l.accept() => match accepted {
                        Ok((stream, _)) => {
                            let out = output.clone();
                            conns.spawn(async move { read_stream(out, stream, None, max).await });
                        }
                        Err(e) => {
                            tracing::warn!(source = %name, "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                }
            }
            drop(l);
            while conns.join_next().await.is_some() {}
        }
        Listener::Udp(sock) => read_datagrams(&output, DatagramSocket::Udp(sock), max).await,
        Listener::UnixDatagram(sock) => {
            read_datagrams(&output, DatagramSocket::Unix(sock), max).await
        }
    }
    drop(output);
    if let Some(reader) = reader {
        let _ = reader.await;
    }
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
    let mut framer = Framer::new(max_frame_bytes);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut total = 0u64;
    let mut eof = false;
    let shutdown = output.shutdown().clone();
    while !eof {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            r = reader.read_buf(&mut buf) => r,
            _ = shutdown.cancelled() => break,
        };
        match read {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(source = %output.name(), "read error, closing connection: {e}");
                eof = true;
            }
        }
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
            tracing::debug!(source = %output.name(), "frame over max_frame_bytes truncated");
        }
        total += frames.len() as u64;
        if !output.frames(frames, true, make_batch).await {
            return total;
        }
    }
    total
}

enum DatagramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DatagramSocket {
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.readable().await,
            DatagramSocket::Unix(s) => s.readable().await,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Option<String>)> {
        match self {
            DatagramSocket::Udp(s) => s.try_recv_from(buf).map(|(n, a)| (n, Some(a.to_string()))),
            DatagramSocket::Unix(s) => s.try_recv_from(buf).map(|(n, _)| (n, None)),
        }
    }
}

async fn read_datagrams(output: &Output, sock: DatagramSocket, max_frame_bytes: usize) {
    let mut buf = vec![0u8; 65_536];
    let shutdown = output.shutdown().clone();
    loop {
        tokio::select! {
            r = sock.readable() => if let Err(e) = r {
                tracing::error!(source = %output.name(), "socket error: {e}");
                return;
            },
            _ = shutdown.cancelled() => return,
        }
        let mut frames = Vec::new();
        // Drain what is queued (up to a chunk) before handing on, so bursts cost one send.
        while frames.len() < CHUNK_EVENTS {
            match sock.try_recv(&mut buf) {
                Ok((n, peer)) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let frame = datagram_frame(data, max_frame_bytes);
                    if frame.data.is_empty() {
                        continue;
                    }
                    frames.push((frame, peer.map(Bytes::from)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(source = %output.name(), "receive error: {e}");
                    break;
                }
            }
        }
        if !output.frames(frames, false, &mut |_| None).await {
            return;
        }
    }
}
