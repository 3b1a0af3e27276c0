//! `data_dir_group`: an operator group may read the state, never write it. Its own test binary:
//! the policy is process-wide.

use std::fs;
use std::os::unix::fs::MetadataExt;

use logferry_private_files as pf;

#[test]
fn a_group_may_read_and_never_write() {
    let t = tempfile::tempdir().expect("tmp");
    let gid = pf::resolve_group("adm")
        .or_else(|| pf::resolve_group("0"))
        .expect("a group");
    assert_eq!(pf::resolve_group(&gid.to_string()), Some(gid));
    assert_eq!(pf::resolve_group("no-such-group-logferry"), None);
    pf::share_with_group(Some(gid));
    let umask = unsafe { libc::umask(0o077) };
    let dir = t.path().join("data/journald");
    pf::create_dir_all(&dir).expect("mkdir");
    pf::write_atomic(&dir.join("j.cursor"), b"c", false).expect("save");
    unsafe { libc::umask(umask) };
    for (p, want) in [
        (t.path().join("data"), 0o750),
        (dir.clone(), 0o750),
        (dir.join("j.cursor"), 0o640),
    ] {
        let m = fs::metadata(&p).expect("stat");
        assert_eq!(m.mode() & 0o7777, want, "{}", p.display());
        assert_eq!(m.gid(), gid, "{}", p.display());
    }
    // Group-writable state is still too open.
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o770)).expect("chmod");
    let tightened = pf::prepare_data_dir(&t.path().join("data")).expect("prepare");
    assert_eq!(tightened.len(), 1);
    assert_eq!(tightened[0].new_mode, 0o750);
    pf::share_with_group(None);
}
