//! Everything created is private whatever the umask. Its own test binary: the umask is
//! process-wide, and other tests create files and directories by hand.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use logferry_private_files as pf;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

fn set_umask(m: u32) -> u32 {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(m as libc::mode_t) as u32 }
}

#[test]
fn everything_created_is_private_under_any_umask() {
    for umask in [0o000, 0o022, 0o027, 0o077, 0o277] {
        let t = tempfile::tempdir().expect("tmp");
        let old = set_umask(umask);
        let dir = t.path().join("data/spool/s");
        pf::create_dir_all(&dir).expect("mkdir");
        pf::create_new(&dir.join("0001.seg")).expect("segment");
        pf::open_lock(&dir.join("LOCK")).expect("lock");
        pf::open_append(&t.path().join("data/dead.jsonl")).expect("append");
        pf::write_atomic(&t.path().join("data/cursor"), b"c", false).expect("atomic");
        set_umask(old);
        for d in ["data", "data/spool", "data/spool/s"] {
            assert_eq!(mode(&t.path().join(d)), 0o700, "{d} under umask {umask:o}");
        }
        for f in [
            "data/spool/s/0001.seg",
            "data/spool/s/LOCK",
            "data/dead.jsonl",
            "data/cursor",
        ] {
            assert_eq!(mode(&t.path().join(f)), 0o600, "{f} under umask {umask:o}");
        }
    }
}
