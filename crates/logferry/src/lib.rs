//! logferry: ships journald, syslog, file and stdin logs to AWS CloudWatch Logs without losing
//! a line.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; ARCHITECTURE.md at the top of
//! the repository is the map. In short:
//!
//! - [`config`]: the TOML file, validated with file/line/key for every problem.
//! - [`source`]: where events come from (syslog sockets, stdin).
//! - [`event`] and [`ack`]: what flows, and how a source learns its events are safe.
//! - [`sink`]: CloudWatch Logs: batching by the PutLogEvents rules, retries, dead letters.
//! - [`format`] and [`template`]: the text sent, and group/stream names.
//! - [`runtime`]: wiring it together, signals and the shutdown grace period.
//! - [`secret`]: the string type for credentials, which never prints its value.
//! - [`net`] and [`tls`]: address ranges and TLS server configs, leaves shared by the config
//!   (which checks them) and the syslog source (which serves them).

pub mod ack;
pub mod commands;
pub mod config;
pub mod event;
pub mod format;
pub mod json_escape;
pub mod json_merge;
pub mod metrics;
pub mod net;
pub mod runtime;
pub mod sd_notify;
pub mod secret;
pub mod sink;
pub mod source;
pub mod state;
pub mod template;
pub mod tls;
