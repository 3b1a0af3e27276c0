//! Syslog codec for logferry: cutting byte streams and datagrams into frames, and parsing
//! frames into header fields and message.
//!
//! The shipper's budget is about 3 µs of CPU per event for everything, so this crate is
//! built for the hot path: no async, no regex, no allocation per message. Frames are
//! zero-copy slices of the receive buffer ([`bytes::Bytes`]) and a parsed [`Message`]
//! borrows every field from its frame.
//!
//! * [`Framer`] decodes stream transports (TCP, unix stream sockets, stdin) with RFC 6587
//!   octet counting or newline framing, detected per frame, with bounded memory for
//!   oversize frames. [`datagram_frame`] does the same for UDP and unix datagrams.
//! * [`parse`] recognises RFC 5424 and the many real-world variants of RFC 3164 (missing
//!   PRI or hostname, RFC 3339 timestamps, `journalctl -o short` lines, Cisco sequence
//!   numbers...). It never fails: unrecognised frames come back as [`Format::Raw`].
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use logferry_syslog::{parse, Format, Framer, ParseOptions, DEFAULT_MAX_FRAME_BYTES};
//!
//! let mut framer = Framer::new(DEFAULT_MAX_FRAME_BYTES);
//! let mut buf = BytesMut::new();
//! // Whatever the socket delivered: here an octet-counted RFC 5424 frame, then a
//! // journalctl line, then the start of a line that is not complete yet.
//! buf.extend_from_slice(b"71 <165>1 2026-11-25T16:20:39.123Z web-1 nginx 812 - - GET /index.html 200\n");
//! buf.extend_from_slice(b"Nov 25 16:20:39 node-1 kubelet[2174]: I1125 started\n<13>Nov 25 16:2");
//!
//! let opts = ParseOptions { now_unix_ms: 1_795_623_700_000, local_utc_offset_secs: 0 };
//! let mut parsed = Vec::new();
//! while let Some(frame) = framer.decode(&mut buf) {
//!     let msg = parse(&frame.data, &opts);
//!     parsed.push((msg.format, msg.hostname.map(str::to_owned), msg.app_name.map(str::to_owned),
//!                  String::from_utf8_lossy(msg.message).into_owned()));
//! }
//! assert_eq!(parsed, [
//!     (Format::Rfc5424, Some("web-1".into()), Some("nginx".into()), "GET /index.html 200".into()),
//!     (Format::Rfc3164, Some("node-1".into()), Some("kubelet".into()), "I1125 started".into()),
//! ]);
//! // The incomplete line stays buffered until more input (or end of stream) arrives.
//! let last = framer.decode_eof(&mut buf).expect("final unterminated frame");
//! assert_eq!(&last.data[..], b"<13>Nov 25 16:2");
//! assert_eq!(parse(&last.data, &opts).format, Format::Raw);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod framing;
mod message;
mod rfc3164;
mod rfc5424;
mod sd;
mod timestamp;

pub use framing::{
    datagram_frame, Frame, Framer, Framing, DEFAULT_MAX_FRAME_BYTES, OCTET_COUNT_SANITY_FACTOR,
};
pub use message::{parse, Format, Message, ParseOptions};
pub use sd::{SdElement, SdElements, SdParam, SdParams};
