//! Durability in the background: the active segment's fsync (under [`FsyncPolicy::Interval`])
//! and the acknowledgement checkpoint (`ack.ckpt`, replaced atomically), on a thread that sleeps
//! until an append or an ack gives it work;
//! segments wholly below the persisted watermark are deleted after each checkpoint.

use super::*;

impl Inner {
    /// fdatasync of the active segment if anything was appended since the
    /// last one (or always, if `force`).
    pub(crate) fn sync_active(&self, force: bool) -> Result<(), SpoolError> {
        let file = {
            let mut st = lock(&self.state);
            if !st.dirty && !force {
                return Ok(());
            }
            st.dirty = false;
            st.active_file.clone()
        };
        let Some(file) = file else { return Ok(()) };
        if let Err(e) = file.sync_data() {
            let mut st = lock(&self.state);
            st.dirty = true;
            st.fsync_errors += 1;
            let err = SpoolError::io("fsyncing active segment in", &self.dir, e);
            st.sync_error = Some(err.to_string());
            return Err(err);
        }
        Ok(())
    }

    /// Persists the watermark if it moved, then deletes segments wholly below
    /// the persisted watermark (never the last segment).
    pub(crate) fn checkpoint(&self) -> Result<(), SpoolError> {
        let mut last = lock(&self.ckpt);
        *last = Instant::now();
        let (w, persisted) = {
            let st = lock(&self.state);
            (st.acks.watermark(), st.persisted_watermark)
        };
        if w != persisted {
            if let Err(e) = write_checkpoint(&self.dir, w) {
                if !e.is_full() {
                    return Err(e);
                }
                // Disk full: free acknowledged segments (safe without the
                // checkpoint; recovery skips the gap) and try once more.
                self.delete_acked_segments(w)?;
                write_checkpoint(&self.dir, w)?;
            }
            let mut st = lock(&self.state);
            st.persisted_watermark = st.persisted_watermark.max(w);
        }
        drop(last);
        let limit = lock(&self.state).persisted_watermark;
        self.delete_acked_segments(limit)
    }
}

/// The background thread sleeps without a timeout while it has nothing to make durable (an
/// idle spool must cost nothing: it runs on every node), so whoever gives it work wakes it.
pub(crate) struct Background {
    pub(crate) stop: Mutex<bool>,
    pub(crate) cv: Condvar,
    /// Set by the thread (holding `stop`) before it sleeps with nothing due; whoever finds it
    /// set clears it and notifies. Cheap on the hot path: one atomic swap per append or ack.
    pub(crate) parked: std::sync::atomic::AtomicBool,
}

impl Background {
    /// Called after a change that gives the thread work (an append to fsync, a watermark
    /// to persist).
    pub(crate) fn work_added(&self) {
        if self.parked.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // Taking `stop` waits until the thread is really inside `wait` (it holds `stop`
            // from before it set `parked`), so the notification cannot be lost.
            let _g = lock(&self.stop);
            self.cv.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        *lock(&self.stop) = true;
        self.cv.notify_all();
    }
}

pub(crate) fn background_loop(weak: Weak<Inner>, background: Arc<Background>, tick: Duration) {
    let parked = |b: &Background| b.parked.load(std::sync::atomic::Ordering::SeqCst);
    // The tick is the shorter of the two intervals (logferry checkpoints every 10 ms and
    // fsyncs every 100 ms); each job keeps its own.
    let mut last_sync = Instant::now();
    loop {
        {
            let mut stop = lock(&background.stop);
            if !*stop && !has_work(&weak) {
                background
                    .parked
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                // Work added before `parked` was set woke nobody: look once more.
                if has_work(&weak) {
                    background
                        .parked
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                } else {
                    stop = background
                        .cv
                        .wait_while(stop, |stop| !*stop && parked(&background))
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
            if *stop {
                return;
            }
            // Something is due: let one tick gather more, then make it all durable at once.
            let (stop, _) = background
                .cv
                .wait_timeout(stop, tick)
                .unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if let FsyncPolicy::Interval(every) = inner.cfg.fsync {
            if last_sync.elapsed() >= every {
                let _ = inner.sync_active(false);
                last_sync = Instant::now();
            }
        }
        let due = lock(&inner.ckpt).elapsed() >= inner.cfg.checkpoint_interval;
        if due && inner.checkpoint().is_err() {
            lock(&inner.state).io_errors += 1;
        }
    }
}

/// Whether the background thread has something to make durable: an append not yet fsynced,
/// or a watermark not yet persisted (also after a failed save, which is retried each tick).
/// A spool that is gone has "work": the thread then finds it gone and ends.
fn has_work(weak: &Weak<Inner>) -> bool {
    let Some(inner) = weak.upgrade() else {
        return true;
    };
    let st = lock(&inner.state);
    (matches!(inner.cfg.fsync, FsyncPolicy::Interval(_)) && st.dirty)
        || st.acks.watermark() != st.persisted_watermark
}

pub(crate) fn write_checkpoint(dir: &Path, w: u64) -> Result<(), SpoolError> {
    let dst = dir.join(CHECKPOINT_FILE);
    private_files::write_atomic(&dst, &encode_checkpoint(w), true)
        .map_err(|e| SpoolError::io("writing checkpoint", dst, e))
}
