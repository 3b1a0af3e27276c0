//! Change notification for follow mode: inotify on the journal directories.
//!
//! Watching directories (not files) is enough and survives rotation: inotify reports the
//! children's events (IN_MODIFY when journald truncates a file to signal new data, about
//! every 250 ms while it writes; create, rename and delete for rotation and vacuuming) to a
//! directory watch. The caller still polls on a timer (see [`crate::Journal::wait`]), so a
//! missed event, a directory that does not exist yet, or a kernel without inotify only adds
//! latency, never loses entries.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

pub(crate) struct Watcher {
    fd: OwnedFd,
    watched: HashMap<PathBuf, i32>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watcher {
    pub(crate) fn new() -> io::Result<Watcher> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(Watcher {
            fd,
            watched: HashMap::new(),
            buf: vec![MaybeUninit::uninit(); 16 * 1024],
        })
    }

    /// Watches `dir` unless already watched. A missing directory is not an error: the
    /// periodic rescan will try again once journald has created it.
    pub(crate) fn watch_dir(&mut self, dir: &Path) {
        if self.watched.contains_key(dir) {
            return;
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        if let Ok(wd) = inotify::add_watch(&self.fd, dir, flags) {
            self.watched.insert(dir.to_path_buf(), wd);
        }
    }

    /// Blocks until an event arrives or `timeout` passes; drains all queued events.
    /// Returns whether anything happened.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let mut removed = Vec::new();
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    if ev.events().contains(inotify::ReadFlags::IGNORED) {
                        removed.push(ev.wd());
                    }
                }
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // A deleted or moved directory loses its watch; forget it so it can be re-added.
        if !removed.is_empty() {
            self.watched.retain(|_, wd| !removed.contains(wd));
        }
        Ok(true)
    }
}
