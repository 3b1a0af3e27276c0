//! Journal files damaged or removed under a following logferry, for real: a real
//! systemd-journald writes them, the test overwrites bytes in the middle of one, cuts another
//! in half and vacuums with `journalctl --vacuum-files` while logferry follows, then damages
//! an archived file logferry has not read yet. What must hold: the damage costs only entries
//! in the damaged part of the damaged file; every entry elsewhere arrives exactly once (moto
//! behind `cwl-proxy`); the reader says which file is damaged and keeps following.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cwl_testkit::journald::{journal_files, JournalSender};
use cwl_testkit::Journald;
use support::*;

const GROUP: &str = "/faults/journal";
const WAIT: Duration = Duration::from_secs(180);

fn config(dir: &Path, endpoint: &str) -> String {
    let source = format!(
        "[sources.j]\ntype = \"journald\"\ndirectory = \"{}\"\nstart = \"beginning\"\n",
        dir.display()
    );
    let sink = cw_sink(&["j"], GROUP, "node", endpoint)
        .max_backoff("1s")
        .format("message");
    pipeline(&source, &sink)
}

/// Writes `tag 000000..` entries of ~500 bytes: 1 MiB journal files rotate every ~1,500.
fn write(s: &JournalSender, tag: &str, range: std::ops::Range<usize>) {
    for i in range {
        let msg = format!("{tag} {i:06} {}", "j".repeat(400 + i % 100));
        s.send(&[
            ("MESSAGE", msg.as_bytes()),
            ("SYSLOG_IDENTIFIER", b"damage"),
        ]);
        if i % 1000 == 999 {
            // journald reads datagrams in order; a pause keeps its socket buffer from filling.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn index_of(text: &str, tag: &str) -> Option<usize> {
    text.strip_prefix(tag)?
        .strip_prefix(' ')?
        .get(..6)?
        .parse()
        .ok()
}

/// How many times each index of `tag` arrived.
fn arrived(moto: &Moto, tag: &str) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for (_, text) in events(&moto.endpoint(), GROUP, "node") {
        if let Some(i) = index_of(&text, tag) {
            *m.entry(i).or_insert(0) += 1;
        }
    }
    m
}

/// Waits until every index in `want` of `tag` arrived; fails on a duplicate of any tag.
fn wait_all(moto: &Moto, lf: &Logferry, tag: &str, want: &BTreeSet<usize>) {
    let mut got = BTreeMap::new();
    let complete = wait_until(WAIT, || {
        got = arrived(moto, tag);
        want.iter().all(|i| got.contains_key(i))
    });
    let missing: Vec<&usize> = want.iter().filter(|i| !got.contains_key(i)).collect();
    assert!(
        complete,
        "{} `{tag}` entries never arrived (first {:?})\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        lf.log()
    );
}

fn assert_no_duplicates(moto: &Moto) {
    for tag in ["a", "b", "v", "c", "d"] {
        assert_none_twice(&arrived(moto, tag), &format!("`{tag}`"));
    }
}

/// The indexes of `tag` that `journalctl --file` reads from one file.
fn in_file(file: &Path, tag: &str) -> BTreeSet<usize> {
    let out = Command::new("journalctl")
        .arg(format!("--file={}", file.display()))
        .args(["--no-pager", "-q", "-o", "cat"])
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| index_of(l, tag))
        .collect()
}

fn archived(jd: &Journald) -> Vec<PathBuf> {
    journal_files(&jd.log_dir())
        .into_iter()
        .filter(|p| !p.ends_with("system.journal"))
        .collect()
}

/// Makes journald archive its active file and start a new one (SIGUSR2).
fn rotate(jd: &mut Journald) {
    let before = archived(jd).len();
    let pid = jd.pid().expect("journald runs") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGUSR2);
    }
    let rotated = wait_until(Duration::from_secs(30), || archived(jd).len() > before);
    assert!(rotated, "journald did not rotate");
    jd.sync();
}

/// Overwrites 64 KiB at 40 % of `file` with garbage.
fn corrupt(file: &Path) {
    let len = std::fs::metadata(file).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open");
    f.seek(SeekFrom::Start(len * 2 / 5)).expect("seek");
    f.write_all(&[0xa5; 65536]).expect("corrupt");
}

#[test]
fn damaged_truncated_and_vacuumed_journal_files_cost_only_their_own_entries() {
    let Some(mut jd) = Journald::start("") else {
        return;
    };
    let moto = Moto::start().expect("moto");
    let proxy = proxy(&moto.endpoint());
    let mut lf = Logferry::start(&config(&jd.log_dir(), &proxy.endpoint()));
    let sender = jd.sender();

    // Files logferry has read, damaged while it follows: a cursor past them must not stall.
    write(&sender, "a", 0..4000);
    jd.sync();
    wait_all(&moto, &lf, "a", &(0..4000).collect());
    let old = archived(&jd);
    assert!(old.len() >= 2, "journald rotated only into {old:?}");
    corrupt(&old[0]);
    let cut = std::fs::metadata(&old[1]).expect("stat").len() / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&old[1])
        .and_then(|f| f.set_len(cut))
        .expect("truncate");
    write(&sender, "b", 0..2000);
    jd.sync();
    wait_all(&moto, &lf, "b", &(0..2000).collect());

    // Vacuumed while following: the oldest archived files go.
    let before_vacuum = archived(&jd).len();
    let vacuum = Command::new("journalctl")
        .arg("-D")
        .arg(jd.log_dir())
        .args(["--vacuum-files=2", "-q"])
        .status()
        .expect("journalctl --vacuum-files");
    assert!(vacuum.success());
    assert!(
        archived(&jd).len() < before_vacuum,
        "nothing vacuumed: {before_vacuum} archived files"
    );
    write(&sender, "v", 0..500);
    jd.sync();
    wait_all(&moto, &lf, "v", &(0..500).collect());

    // A file logferry has not read yet, damaged before it gets there.
    assert!(lf.terminate().success(), "{}", lf.log());
    write(&sender, "c", 0..3000);
    rotate(&mut jd);
    let unread = archived(&jd);
    let damaged = unread.last().expect("an archived file").clone();
    let in_damaged = in_file(&damaged, "c");
    assert!(!in_damaged.is_empty(), "no `c` entry in {damaged:?}");
    corrupt(&damaged);
    let readable_after = in_file(&damaged, "c");
    let elsewhere: BTreeSet<usize> = (0..3000).filter(|i| !in_damaged.contains(i)).collect();
    write(&sender, "d", 0..500);
    jd.sync();
    lf.spawn(|_| {});

    wait_all(&moto, &lf, "d", &(0..500).collect());
    wait_all(&moto, &lf, "c", &elsewhere);
    let c = arrived(&moto, "c");
    let lost: Vec<&usize> = in_damaged.iter().filter(|i| !c.contains_key(i)).collect();
    eprintln!(
        "damaged file: {} `c` entries, {} still readable by journalctl, {} delivered",
        in_damaged.len(),
        readable_after.len(),
        in_damaged.len() - lost.len()
    );
    // What journalctl still reads from the damaged file, logferry reads too.
    let unreadable: Vec<&usize> = readable_after
        .iter()
        .filter(|i| !c.contains_key(i))
        .collect();
    assert!(
        unreadable.is_empty(),
        "{} entries journalctl reads from the damaged file never arrived (first {:?})",
        unreadable.len(),
        &unreadable[..unreadable.len().min(10)]
    );
    let name = damaged.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let log = lf.log();
    assert!(
        log.lines()
            .any(|l| l.contains("journal file problem") && l.contains(name)),
        "the damaged file is not named in the log\n{log}"
    );
    assert_no_duplicates(&moto);
    assert_eq!(proxy.stats().expect("stats")["violations"], 0);
}
