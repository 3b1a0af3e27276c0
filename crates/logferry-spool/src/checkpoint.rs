//! Durability in the background: the active segment's fsync (under [`FsyncPolicy::Interval`])
//! and the acknowledgement checkpoint (`ack.ckpt`, replaced atomically), on a ticker thread;
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

pub(crate) fn background_loop(weak: Weak<Inner>, stopper: Arc<Stopper>, tick: Duration) {
    loop {
        {
            let g = lock(&stopper.stop);
            if *g {
                return;
            }
            let (g, _) = stopper
                .cv
                .wait_timeout(g, tick)
                .unwrap_or_else(|e| e.into_inner());
            if *g {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if matches!(inner.cfg.fsync, FsyncPolicy::Interval(_)) {
            let _ = inner.sync_active(false);
        }
        let due = lock(&inner.ckpt).elapsed() >= inner.cfg.checkpoint_interval;
        if due && inner.checkpoint().is_err() {
            lock(&inner.state).io_errors += 1;
        }
    }
}

pub(crate) fn write_checkpoint(dir: &Path, w: u64) -> Result<(), SpoolError> {
    let dst = dir.join(CHECKPOINT_FILE);
    private_files::write_atomic(&dst, &encode_checkpoint(w), true)
        .map_err(|e| SpoolError::io("writing checkpoint", dst, e))
}
