//! A small real filesystem a test fills up and frees again: a tmpfs mounted for the test, so
//! writes fail with ENOSPC for real. Tests run as root, which no permission bit stops; a full
//! filesystem stops everyone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A mounted tmpfs, unmounted when dropped (declare it before the logferry using it, so it is
/// dropped after).
pub struct SmallDisk {
    _base: tempfile::TempDir,
    mnt: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (mount's syntax: "1m"); `None` when mounting is refused (not
    /// root), reported as `test` skipped (`cwl_testkit::skipped`).
    pub fn mount(test: &str, size: &str) -> Option<SmallDisk> {
        let base = tempfile::tempdir().expect("tempdir");
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mnt)
            .stderr(Stdio::null())
            .status();
        if !matches!(mounted, Ok(s) if s.success()) {
            cwl_testkit::skipped(test, "cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(SmallDisk { _base: base, mnt })
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Fills it until a write fails with ENOSPC; a write anyone makes now fails the same way.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.mnt.join("filler"))
            .expect("filler");
        let chunk = vec![b'f'; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let probe = std::fs::write(self.mnt.join("probe"), b"x");
        let _ = std::fs::remove_file(self.mnt.join("probe"));
        assert!(probe.is_err(), "the tmpfs still takes writes after filling");
    }

    /// Frees what [`SmallDisk::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(self.mnt.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process killed a moment ago may still hold a file open there.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
