//! Links are never followed; `data_dir` is audited. (The umask test has its own binary: the
//! umask is process-wide, and these tests create directories by hand.)

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use logferry_private_files as pf;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

#[test]
fn writes_never_go_through_a_planted_link() {
    let t = tempfile::tempdir().expect("tmp");
    let target = t.path().join("victim");
    fs::write(&target, b"untouched").expect("victim");
    let link = t.path().join("dead.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("link");

    let e = pf::open_append(&link).expect_err("append through a link");
    assert!(pf::is_symlink_refusal(&e), "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = pf::open_write(&link).expect_err("write through a link");
    assert!(pf::is_symlink_refusal(&e), "{e}");
    let e = pf::open_read(&link).expect_err("read through a link");
    assert!(pf::is_symlink_refusal(&e), "{e}");
    assert!(pf::create_new(&link).is_err());

    // An atomic save replaces a link at the destination and removes one at the temp name.
    let cursor = t.path().join("cursor");
    std::os::unix::fs::symlink(&target, &cursor).expect("link");
    std::os::unix::fs::symlink(&target, t.path().join(".cursor.tmp")).expect("link");
    pf::write_atomic(&cursor, b"saved", true).expect("save");
    assert_eq!(fs::read(&target).expect("victim"), b"untouched");
    assert!(fs::symlink_metadata(&cursor).expect("stat").is_file());
    assert_eq!(fs::read(&cursor).expect("cursor"), b"saved");

    // A directory link is refused where logferry creates its directories.
    let elsewhere = t.path().join("elsewhere");
    fs::create_dir(&elsewhere).expect("dir");
    let spool = t.path().join("spool");
    std::os::unix::fs::symlink(&elsewhere, &spool).expect("link");
    let e = pf::create_dir_all(&spool).expect_err("dir link");
    assert!(pf::is_symlink_refusal(&e), "{e}");
}

#[test]
fn data_dir_audit_refuses_what_others_could_swap_or_read() {
    let t = tempfile::tempdir().expect("tmp");
    let real = t.path().join("real");
    fs::create_dir(&real).expect("dir");

    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("link");
    assert!(matches!(
        pf::prepare_data_dir(&link),
        Err(pf::UnsafeDataDir::Symlink { .. })
    ));

    let open = t.path().join("open");
    fs::create_dir(&open).expect("dir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = pf::prepare_data_dir(&open).expect_err("world-writable");
    assert!(
        matches!(e, pf::UnsafeDataDir::WritableByOthers { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("0777"), "{e}");
    // Nor may logferry create its data_dir inside such a place.
    assert!(matches!(
        pf::prepare_data_dir(&open.join("logferry")),
        Err(pf::UnsafeDataDir::WritableByOthers { .. })
    ));
    // A root-owned sticky directory (like /tmp) is not "writable by others" in that sense.
    let sticky = t.path().join("sticky");
    fs::create_dir(&sticky).expect("dir");
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).expect("chmod");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cwl_testkit::skipped("data_dir owned by another user", "not root: cannot chown");
    } else {
        pf::prepare_data_dir(&sticky.join("logferry")).expect("under a sticky root dir");
        assert_eq!(mode(&sticky.join("logferry")), 0o700);

        let foreign = t.path().join("foreign");
        fs::create_dir(&foreign).expect("dir");
        std::os::unix::fs::chown(&foreign, Some(65534), None).expect("chown");
        let e = pf::prepare_data_dir(&foreign).expect_err("another user's");
        assert!(
            matches!(
                e,
                pf::UnsafeDataDir::OwnedByAnotherUser { owner: 65534, .. }
            ),
            "{e}"
        );
    }

    // A link planted inside is refused too, before anything is written.
    fs::create_dir_all(real.join("spool/s")).expect("dir");
    std::os::unix::fs::symlink("/etc/passwd", real.join("spool/s/0000000000000001.seg"))
        .expect("link");
    let e = pf::prepare_data_dir(&real).expect_err("link inside");
    assert!(
        matches!(e, pf::UnsafeDataDir::Symlink { ref path } if path.ends_with("0000000000000001.seg")),
        "{e}"
    );
}

#[test]
fn data_dir_audit_tightens_what_an_earlier_run_left_open() {
    let t = tempfile::tempdir().expect("tmp");
    let data = t.path().join("data");
    fs::create_dir_all(data.join("spool/s")).expect("dir");
    for d in [&data, &data.join("spool"), &data.join("spool/s")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let seg = data.join("spool/s/0000000000000001.seg");
    fs::File::create(&seg)
        .and_then(|mut f| f.write_all(b"x"))
        .expect("seg");
    fs::set_permissions(&seg, fs::Permissions::from_mode(0o666)).expect("chmod");
    let ok = data.join("cursor");
    fs::write(&ok, b"c").expect("cursor");
    fs::set_permissions(&ok, fs::Permissions::from_mode(0o400)).expect("chmod");

    let tightened = pf::prepare_data_dir(&data).expect("prepare");
    let mut seen: Vec<_> = tightened
        .iter()
        .map(|t| {
            (
                t.path.strip_prefix(&data).expect("under").to_path_buf(),
                t.old_mode,
                t.new_mode,
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("".into(), 0o755, 0o700),
            ("spool".into(), 0o755, 0o700),
            ("spool/s".into(), 0o755, 0o700),
            ("spool/s/0000000000000001.seg".into(), 0o666, 0o600),
        ]
    );
    assert_eq!(mode(&seg), 0o600);
    assert_eq!(mode(&ok), 0o400, "never widened");
    assert!(pf::prepare_data_dir(&data).expect("again").is_empty());
}
