//! Taking events in: each event's text is formatted once, its stream found (the group and
//! stream templates rendered, the entity mapped), and it joins that stream's request being
//! built, until the sink's one budget (`max_held_bytes`, see "Backpressure" in the parent
//! module) is full; what is left of a chunk waits in `unread`. Events CloudWatch would refuse
//! (too old, too far ahead) go to the dead-letter file instead, and events known to be in
//! CloudWatch already ([`super::settle`]) are acknowledged without being sent.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::batch::{split_oversize, Pending, StreamBatcher, MAX_MESSAGE_BYTES};
use super::dead_letter::Reason;
use super::ledger::content_hash;
use super::{
    cut_bytes, into_request, request, CloudWatchSink, Existence, Finished, StreamState, MAX_AGE_MS,
    MAX_AHEAD_MS,
};
use crate::ack::AckStatus;
use crate::event::{now_ms, CommonFields, Event};
use crate::format::format_event;

/// Where the last event with common fields was routed.
pub(super) struct LastRoute {
    common: Arc<CommonFields>,
    source: Arc<str>,
    priority: Option<u8>,
    key: String,
}

impl LastRoute {
    /// Whether `event` goes where the last one went: names and the entity are made of its
    /// source, priority and fields only, and these are the same (the same common fields, held
    /// here so their address is not reused, and none of its own).
    fn routes(&self, event: &Event) -> bool {
        event.fields.is_empty()
            && event.header.is_none()
            && event.priority == self.priority
            && event
                .common
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.common))
            && Arc::ptr_eq(&event.source, &self.source)
    }
}

impl CloudWatchSink {
    pub(super) fn ingest(&mut self, events: Vec<Event>) {
        self.shared
            .stats
            .events_received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.unread = events.into_iter();
        self.take_in();
    }

    /// Takes in events of the last chunk until they are all in or the budget is full.
    pub(super) fn take_in(&mut self) {
        let stats = self.shared.stats.clone();
        let now = now_ms();
        let taken_in = Instant::now();
        let format = self.shared.config.format;
        let budget = self.shared.config.max_held_bytes;
        // With fixed group and stream names and no entity, every event goes to one stream:
        // routed once per call rather than once per event.
        let one_route = self.group.as_static().is_some()
            && self.stream.as_static().is_some()
            && self.entities.is_none();
        let mut routed = false;
        // Whether `key_buf` holds `last_route`'s key, its stream looked up (and its `last_used`
        // set to `taken_in`) for an earlier event of this call: the next event `last_route`
        // routes needs no lookup of its own. A source's events come in runs of one file (one
        // stream), and the key is long (group and stream names): two hashes of it per event
        // were 2.6% of a container-log run's CPU. Nothing in this loop removes a stream.
        let mut last_route_looked_up = false;
        // Hashed for the in-flight ledger here, while the text is in cache: hashed when the
        // request was recorded, each message was read back from memory (5% of a syslog run).
        let recording = self.shared.ledger.lock().is_ok_and(|l| l.recording());
        while self.held_bytes < budget {
            let Some(event) = self.unread.next() else {
                break;
            };
            // Formatted into a reused buffer and copied out at its exact size: the message is
            // held until its request is encoded, and `format_event`'s headroom (64 bytes a line)
            // was a third of that.
            let known = format_event(&event, format, &mut self.text_buf);
            let text = self.text_buf.as_str().to_owned();
            if self.text_buf.capacity() > 64 << 10 {
                // Not kept at the size of the largest message ever seen.
                self.text_buf = String::new();
            }
            if text.is_empty() {
                // CloudWatch refuses empty messages; an explicit, counted policy.
                stats.dropped_empty.fetch_add(1, Ordering::Relaxed);
                event.ack.resolve(AckStatus::DeadLettered);
                continue;
            }
            let routed_already = (one_route && routed)
                || (last_route_looked_up
                    && self.last_route.as_ref().is_some_and(|l| l.routes(&event)));
            if !routed_already {
                last_route_looked_up = self.route(&event, taken_in);
                routed = true;
            }
            // Borrowed out of `key_buf` (and put back) so no event allocates its key.
            let key = std::mem::take(&mut self.key_buf);
            let ts = event.timestamp_ms;
            let reject = if ts < now - MAX_AGE_MS {
                Some(Reason::TooOld)
            } else if ts > now + MAX_AHEAD_MS {
                Some(Reason::TooNew)
            } else {
                None
            };
            let origin = event.origin;
            if text.len() <= MAX_MESSAGE_BYTES {
                let content = recording.then(|| content_hash(ts, &text));
                let part = Pending {
                    timestamp_ms: ts,
                    message: text,
                    ack: event.ack,
                    origin,
                    known,
                    content,
                };
                self.take_part(&key, part, reject);
            } else {
                let parts = split_oversize(ts, text, event.ack, MAX_MESSAGE_BYTES);
                stats
                    .split_parts
                    .fetch_add(parts.len() as u64 - 1, Ordering::Relaxed);
                for (i, mut part) in parts.into_iter().enumerate() {
                    if origin != 0 {
                        part.origin = if i == 0 {
                            origin
                        } else {
                            crate::event::origin(&[
                                &origin.to_le_bytes(),
                                &(i as u64).to_le_bytes(),
                            ])
                        };
                    }
                    self.take_part(&key, part, reject);
                }
            }
            if reject.is_some() {
                self.flush_rejected(&key);
            }
            // Only when builders hold most of it: when ready requests do, they free it as
            // they go, and cutting a builder would only make the next request tiny (at the
            // cap, each new chunk became a request of its own: 34 events a request, 27,000
            // events/s on one syslog stream).
            if self.held_bytes >= budget && self.building_bytes() > budget / 2 {
                self.make_fullest_ready(&key);
            }
            self.key_buf = key;
        }
    }

    /// Takes one event (or part of a split one) into stream `key`'s requests: acknowledged
    /// without sending if its origin is known to be in CloudWatch ([`settle`]), set aside for
    /// the dead-letter file if `reject` says so.
    fn take_part(&mut self, key: &str, part: Pending, reject: Option<Reason>) {
        if part.origin != 0 && !self.skip.is_empty() && self.skip.remove(&part.origin) {
            let stats = &self.shared.stats;
            stats.events_delivered.fetch_add(1, Ordering::Relaxed);
            stats
                .events_skipped_delivered
                .fetch_add(1, Ordering::Relaxed);
            part.ack.resolve(AckStatus::Delivered);
            return;
        }
        if let Some(reason) = reject {
            self.rejected.push((part, reason));
            return;
        }
        let Some(state) = self.streams.get_mut(key) else {
            return;
        };
        let before = state.building.bytes();
        let cut = state.building.push(part);
        self.held_bytes = self.held_bytes - before + state.building.bytes();
        if let Some(cut) = cut {
            // Still held, now as a ready request.
            self.held_bytes += cut_bytes(&cut);
            state.ready.push_back(into_request(cut));
        }
    }

    /// Finds (or creates) the stream state for `event`, leaving its key in `key_buf`; whether
    /// that is `last_route`'s key.
    fn route(&mut self, event: &Event, now: Instant) -> bool {
        if let Some(last) = self.last_route.as_ref().filter(|l| l.routes(event)) {
            self.key_buf.clear();
            self.key_buf.push_str(&last.key);
            if let Some(state) = self.streams.get_mut(&self.key_buf) {
                state.last_used = now;
                return true;
            }
        }
        self.route_afresh(event, now);
        self.last_route = event.common.as_ref().map(|common| LastRoute {
            common: common.clone(),
            source: event.source.clone(),
            priority: event.priority,
            key: self.key_buf.clone(),
        });
        self.last_route.is_some()
    }

    fn route_afresh(&mut self, event: &Event, now: Instant) {
        let group = match self.group.as_static() {
            Some(g) => g,
            None => {
                self.group.render(event, &mut self.group_buf);
                &self.group_buf
            }
        };
        let stream = match self.stream.as_static() {
            Some(s) => s,
            None => {
                self.stream.render(event, &mut self.stream_buf);
                &self.stream_buf
            }
        };
        self.key_buf.clear();
        self.key_buf.push_str(group);
        self.key_buf.push('\n');
        self.key_buf.push_str(stream);
        // Events of different workloads never share a request.
        let entity = self.entities.as_mut().and_then(|m| m.entity(event));
        if let Some(e) = &entity {
            self.key_buf.push('\n');
            self.key_buf.push_str(e);
        }
        if let Some(state) = self.streams.get_mut(&self.key_buf) {
            state.last_used = now;
            return;
        }
        let cfg = &self.shared.config;
        self.streams.insert(
            self.key_buf.clone(),
            StreamState {
                group: group.into(),
                stream: stream.into(),
                entity,
                building: StreamBatcher::new(cfg.max_batch_events, cfg.max_batch_bytes),
                ready: VecDeque::new(),
                in_flight: Vec::new(),
                existence: Existence::Unknown,
                last_used: now,
            },
        );
    }

    fn flush_rejected(&mut self, key: &str) {
        if self.rejected.is_empty() {
            return;
        }
        let Some(state) = self.streams.get(key) else {
            return;
        };
        let rejected = std::mem::take(&mut self.rejected);
        let shared = self.shared.clone();
        let (group, stream) = (state.group.clone(), state.stream.clone());
        self.tasks.spawn(
            async move {
                request::dead_letter(&shared, &group, &stream, rejected, None).await;
                Finished::DeadLettered
            }
            .in_current_span(),
        );
    }
}
