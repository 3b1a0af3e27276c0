//! Test infrastructure for logferry's CloudWatch Logs output.
//!
//! Three things live here:
//!
//! * the `fake-cloudwatch` binary: a fast HTTPS (or HTTP) endpoint that speaks enough of
//!   the CloudWatch Logs API for benchmarks, validates every PutLogEvents against the real
//!   limits and counts what it received;
//! * the `cwl-proxy` binary: a transparent HTTP proxy in front of `moto_server` that checks
//!   the limits moto ignores, records every PutLogEvents, and injects faults (throttling,
//!   5xx, connection resets before or after forwarding, outages, latency) set at run time
//!   through an admin API;
//! * this library, for integration tests: [`Moto`], [`Proxy`] and [`FakeCloudWatch`]
//!   process handles (killed on drop), a blocking client to read back what moto stored
//!   ([`read_events`], [`list_streams`], [`list_groups`]) and the limit checks themselves
//!   ([`limits`]);
//! * [`Journald`]: a real `systemd-journald` in a private mount namespace, to write entries
//!   to and read them back with journalctl (root only; skips cleanly otherwise).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let moto = cwl_testkit::Moto::start()?;
//! let proxy = cwl_testkit::Proxy::start_with_binary("target/debug/cwl-proxy", &moto.endpoint())?;
//! proxy.set_faults(&serde_json::json!({ "throttle_pct": 30, "operations": ["PutLogEvents"] }))?;
//! // ... run the shipper with AWS_ENDPOINT_URL=proxy.endpoint() ...
//! let events = cwl_testkit::read_events(&moto.endpoint(), "group", "stream")?;
//! assert_eq!(proxy.stats()?["violations"], 0);
//! # let _ = events; Ok(()) }
//! ```
//!
//! The library part needs only `serde_json` and `libc`: depend on it with
//! `default-features = false` to skip the servers' hyper/rustls/rcgen dependencies.

pub mod client;
pub mod journald;
pub mod limits;
mod procs;
#[cfg(feature = "servers")]
pub mod server;
pub mod skip;

pub use client::{
    call, call_raw, create_group, create_stream, group_retention, http_request, list_groups,
    list_streams, put_events, read_events, HttpResponse,
};
pub use journald::{JournalSender, Journald};
pub use procs::{find_binary, FakeCloudWatch, Moto, Proxy};
pub use skip::skipped;
