//! Pods asked for one by one (`GET`), cached: the way in when no node is known (no watch), while
//! the watch is down, and for a pod the watch has not shown (see the crate docs).
//!
//! A pod is asked once and its answer cached for `cache_ttl`; an older answer is still used
//! while it is asked again. A failed request marks the API down (new pods answer
//! [`Lookup::Unavailable`] at once, so nothing waits on an API that does not answer) and the
//! pod is asked again after `retry_after`; the first success marks it up again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::watch::StoreAnswer;
use crate::{FetchPod, Fetched, Lookup, PodMeta, PodRef, Shared};

#[derive(Debug)]
pub(crate) enum Slot {
    /// Queued or in flight.
    Asking,
    /// Answered at `at`; `refreshing` while it is asked again.
    Known {
        meta: Option<Arc<PodMeta>>,
        at: Instant,
        refreshing: bool,
    },
    /// The last request failed at `at`.
    Failed { at: Instant },
}

/// A pod to ask for; `after_grace`: the watch is up and may show it first (see the crate docs).
#[derive(Debug)]
pub(crate) struct Ask {
    pub pod: PodRef,
    pub after_grace: bool,
}

/// Past this many cached pods, answers older than two TTLs are dropped.
const SWEEP_ABOVE: usize = 4096;

impl Shared {
    /// What the `GET` cache says of `pod`, queueing a request when it has no answer (or a
    /// stale one, unless `watch_up`: then the watch would have shown a change).
    pub(crate) fn lookup_by_get(&self, pod: &PodRef, watch_up: bool) -> Lookup {
        let now = Instant::now();
        let opts = &self.opts;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (answer, ask) = match cache.get_mut(pod) {
            Some(Slot::Known {
                meta,
                at,
                refreshing,
            }) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                let stale = !watch_up && now.duration_since(*at) >= opts.cache_ttl && !*refreshing;
                if stale {
                    *refreshing = true;
                }
                let answer = match meta {
                    Some(m) => Lookup::Found(m.clone()),
                    None => Lookup::NotFound,
                };
                (answer, stale)
            }
            Some(Slot::Asking) => (self.while_asking(watch_up), false),
            Some(slot @ Slot::Failed { .. }) => {
                let again = matches!(slot, Slot::Failed { at } if now.duration_since(*at) >= opts.retry_after);
                if again {
                    *slot = Slot::Asking;
                }
                (Lookup::Unavailable, again)
            }
            None => {
                if cache.len() >= SWEEP_ABOVE {
                    sweep(&mut cache, now, opts.cache_ttl * 2);
                }
                cache.insert(pod.clone(), Slot::Asking);
                (self.while_asking(watch_up), true)
            }
        };
        let ask = ask.then(|| Ask {
            pod: pod.clone(),
            after_grace: watch_up,
        });
        if ask.is_some_and(|a| self.queue.try_send(a).is_err()) {
            // The queue is full (thousands of new pods at once): answer "nothing" now and let
            // a later lookup ask again.
            cache.remove(pod);
            return Lookup::Unavailable;
        }
        answer
    }

    fn while_asking(&self, watch_up: bool) -> Lookup {
        if watch_up || self.stats.up.load(Ordering::Relaxed) {
            Lookup::Pending
        } else {
            Lookup::Unavailable
        }
    }
}

fn sweep(cache: &mut HashMap<PodRef, Slot>, now: Instant, older_than: Duration) {
    cache.retain(|_, slot| match slot {
        Slot::Asking => true,
        Slot::Known { at, .. } | Slot::Failed { at } => now.duration_since(*at) < older_than,
    });
}

/// The background task: asks for queued pods, `concurrency` at a time, until every
/// [`crate::PodMetadata`] is dropped.
pub(crate) async fn run(
    shared: Weak<Shared>,
    mut rx: mpsc::Receiver<Ask>,
    fetcher: Arc<dyn FetchPod>,
) {
    let limit = shared.upgrade().map_or(1, |s| s.opts.concurrency.max(1));
    let permits = Arc::new(Semaphore::new(limit));
    while let Some(ask) = rx.recv().await {
        let permits = permits.clone();
        let shared = shared.clone();
        let fetcher = fetcher.clone();
        tokio::spawn(async move {
            if ask.after_grace && shown_during_grace(&shared, &ask.pod).await {
                return;
            }
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let fetched = fetcher.fetch(ask.pod.clone()).await;
            drop(permit);
            if let Some(shared) = shared.upgrade() {
                record(&shared, ask.pod, fetched);
            }
        });
    }
}

/// Waits `watch_grace`; whether the watch has shown the pod meanwhile (then its `Asking` slot
/// is dropped: the store answers).
async fn shown_during_grace(shared: &Weak<Shared>, pod: &PodRef) -> bool {
    let Some(grace) = shared.upgrade().map(|s| s.opts.watch_grace) else {
        return true;
    };
    tokio::time::sleep(grace).await;
    let Some(s) = shared.upgrade() else {
        return true;
    };
    let shown = s.store.as_ref().is_some_and(|store| {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        matches!(
            store.answer(pod, Instant::now(), s.opts.cache_ttl),
            StoreAnswer::Known(_)
        )
    });
    if shown {
        s.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod);
    }
    shown
}

fn record(shared: &Shared, pod: PodRef, fetched: Fetched) {
    let now = Instant::now();
    let meta = match fetched {
        Fetched::Failed(why) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            if shared.stats.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    namespace = %pod.namespace,
                    pod = %pod.name,
                    "the Kubernetes API does not answer ({why}); events are sent without pod labels until it does"
                );
            }
            let mut cache = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
            // A stale answer stays more useful than none.
            match cache.get_mut(&pod) {
                Some(Slot::Known { refreshing, at, .. }) => {
                    *refreshing = false;
                    // Not asked again before `retry_after`.
                    *at = now
                        .checked_sub(shared.opts.cache_ttl)
                        .and_then(|t| t.checked_add(shared.opts.retry_after))
                        .unwrap_or(now);
                }
                _ => {
                    cache.insert(pod, Slot::Failed { at: now });
                }
            }
            return;
        }
        Fetched::NotFound => {
            shared.stats.not_found.fetch_add(1, Ordering::Relaxed);
            None
        }
        Fetched::Pod { uid, meta } => {
            if pod.uid.is_empty() || pod.uid == uid {
                shared.stats.found.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(meta))
            } else {
                // The name now belongs to a newer pod; the log is the old one's.
                shared.stats.not_found.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    };
    if !shared.stats.up.swap(true, Ordering::Relaxed) {
        tracing::info!("the Kubernetes API answers again; pod labels are added again");
    }
    let mut cache = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
    let changed = !matches!(cache.get(&pod), Some(Slot::Known { meta: m, .. }) if *m == meta);
    cache.insert(
        pod,
        Slot::Known {
            meta,
            at: now,
            refreshing: false,
        },
    );
    if changed {
        shared.generation.fetch_add(1, Ordering::Relaxed);
    }
}
