//! Finding the files to tail: include/exclude globs, and the directories whose changes matter.
//!
//! [`Discovery::scan`] walks each include pattern itself instead of calling `glob::glob`,
//! because the tailer needs more than the list of matches: every directory the walk entered (to
//! watch with inotify, so a new file or a rename is noticed at once), and each entry's inode
//! number straight from `readdir` (so a rescan of ten thousand known files compares numbers and
//! stats nothing). A pattern is split into path components; the wildcard-free prefix is used as
//! is, `*`/`?`/`[...]` components are matched per directory entry with `glob::Pattern`, and `**`
//! matches any number of directories (symlinked directories are not followed there, so a link
//! loop cannot make the walk endless). Symlinked files are followed: Kubernetes'
//! `/var/log/containers/*.log` are links into `/var/log/pods`.
//!
//! Exclude patterns are matched against the full path with `glob`'s default options, in which
//! `*` also matches `/`: `*.gz` excludes every gzip file wherever it is. A
//! [`NamespaceFilter`] (Kubernetes `include_namespaces` / `exclude_namespaces`) excludes the
//! same way, by the namespace the path names.
//!
//! [`DirWatcher`] is the inotify side: one watch per directory, never per file, since a
//! directory watch reports IN_MODIFY, IN_CREATE, IN_MOVED_* and IN_DELETE for the files in it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::FileType;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirEntryExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::container::NamespaceFilter;

/// A pattern that does not parse, or is not absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern {
    pub pattern: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(OsString),
    Glob(glob::Pattern),
    /// `**`: zero or more directories.
    AnyDirs,
}

#[derive(Debug, Clone)]
struct Include {
    /// The wildcard-free leading directories.
    prefix: PathBuf,
    parts: Vec<Part>,
}

/// A file a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The path as matched (a symlink's own path, not its target's).
    pub path: PathBuf,
    /// The inode number `readdir` reported: the link's own for a symlink.
    pub ino: u64,
    /// Whether the directory entry is a symlink (its target must be stat'ed to know the file).
    pub symlink: bool,
    /// Whether an exclude pattern matches it (reported so the tailer can tell a file renamed to
    /// an excluded name from one rotated away).
    pub excluded: bool,
}

/// What one walk over the include patterns saw.
#[derive(Debug, Default)]
pub struct Scan {
    /// Matched entries that are not directories (files, symlinks, and special files the tailer
    /// reports as skipped), each path once, in walk order.
    pub files: Vec<Found>,
    /// Every directory the walk read, plus the deepest existing ancestor of each pattern's
    /// prefix when the prefix itself does not exist yet.
    pub dirs: Vec<PathBuf>,
}

/// Compiled include and exclude patterns.
#[derive(Debug, Clone)]
pub struct Discovery {
    includes: Vec<Include>,
    excludes: Vec<glob::Pattern>,
    namespaces: NamespaceFilter,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Discovery {
    /// Compiles the patterns; include patterns must be absolute.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Discovery, BadPattern> {
        let bad = |pattern: &str, reason: String| BadPattern {
            pattern: pattern.to_string(),
            reason,
        };
        let mut includes = Vec::with_capacity(include.len());
        for raw in include {
            let path = Path::new(raw);
            if !path.is_absolute() {
                return Err(bad(raw, "include patterns must be absolute paths".into()));
            }
            let mut prefix = PathBuf::from("/");
            let mut parts = Vec::new();
            for comp in path.components() {
                let Component::Normal(c) = comp else {
                    // RootDir (already in `prefix`); `..` and `.` are kept literally.
                    match comp {
                        Component::ParentDir | Component::CurDir if parts.is_empty() => {
                            prefix.push(comp.as_os_str());
                        }
                        Component::ParentDir | Component::CurDir => {
                            parts.push(Part::Literal(comp.as_os_str().to_os_string()));
                        }
                        _ => {}
                    }
                    continue;
                };
                let text = c.to_string_lossy();
                if text == "**" {
                    parts.push(Part::AnyDirs);
                } else if has_wildcard(&text) {
                    let p = glob::Pattern::new(&text).map_err(|e| bad(raw, e.to_string()))?;
                    parts.push(Part::Glob(p));
                } else if text.contains("**") {
                    return Err(bad(raw, "`**` must be a whole path component".into()));
                } else if parts.is_empty() {
                    prefix.push(c);
                } else {
                    parts.push(Part::Literal(c.to_os_string()));
                }
            }
            if parts.is_empty() {
                // A plain file path: its name is the one part, so the walk watches its directory.
                match prefix.file_name().map(|n| n.to_os_string()) {
                    Some(name) => {
                        prefix.pop();
                        parts.push(Part::Literal(name));
                    }
                    None => return Err(bad(raw, "the pattern names no file".into())),
                }
            }
            includes.push(Include { prefix, parts });
        }
        let excludes = exclude
            .iter()
            .map(|raw| glob::Pattern::new(raw).map_err(|e| bad(raw, e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Discovery {
            includes,
            excludes,
            namespaces: NamespaceFilter::default(),
        })
    }

    /// Also excludes the files of pods whose namespace `namespaces` refuses.
    pub fn with_namespaces(self, namespaces: NamespaceFilter) -> Discovery {
        Discovery { namespaces, ..self }
    }

    /// Whether an exclude pattern matches `path`, or its namespace is filtered out.
    pub fn is_excluded(&self, path: &Path) -> bool {
        self.excludes.iter().any(|p| p.matches_path(path)) || !self.namespaces.admits(path)
    }

    /// Whether `path` matches an include pattern (exclusions not considered).
    pub fn is_included(&self, path: &Path) -> bool {
        self.includes.iter().any(|inc| {
            let Ok(rest) = path.strip_prefix(&inc.prefix) else {
                return false;
            };
            let names: Vec<&std::ffi::OsStr> = rest.iter().collect();
            match_parts(&inc.parts, &names)
        })
    }

    /// Walks every include pattern. Unreadable directories are skipped (a later rescan retries
    /// them); the walk never fails.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        // Two patterns, or `**` (which reaches a directory along several routes), can match a
        // path twice; a single plain pattern cannot, and then deduplication is not paid for.
        let dedup = self.includes.len() > 1
            || self
                .includes
                .iter()
                .any(|i| i.parts.iter().any(|p| matches!(p, Part::AnyDirs)));
        let mut seen_files = dedup.then(std::collections::HashSet::new);
        let mut seen_dirs = std::collections::HashSet::new();
        for inc in &self.includes {
            if !walk(
                self,
                &inc.prefix,
                &inc.parts,
                &mut scan,
                &mut seen_files,
                &mut seen_dirs,
            ) {
                // The prefix does not exist (yet): watch the deepest ancestor that does, so its
                // creation is noticed without waiting for the periodic rescan.
                let mut dir = inc.prefix.as_path();
                while let Some(parent) = dir.parent() {
                    dir = parent;
                    if dir.is_dir() {
                        if seen_dirs.insert(dir.to_path_buf()) {
                            scan.dirs.push(dir.to_path_buf());
                        }
                        break;
                    }
                }
            }
        }
        scan
    }
}

/// Matches path components against pattern parts (for [`Discovery::is_included`]).
fn match_parts(parts: &[Part], names: &[&std::ffi::OsStr]) -> bool {
    match (parts.first(), names.first()) {
        (None, None) => true,
        (Some(Part::AnyDirs), _) => {
            match_parts(&parts[1..], names)
                || (!names.is_empty() && names.len() > 1 && match_parts(parts, &names[1..]))
        }
        (Some(Part::Literal(l)), Some(n)) => l == n && match_parts(&parts[1..], &names[1..]),
        (Some(Part::Glob(g)), Some(n)) => {
            n.to_str().is_some_and(|s| g.matches(s)) && match_parts(&parts[1..], &names[1..])
        }
        _ => false,
    }
}

fn add_file(
    disc: &Discovery,
    path: PathBuf,
    ino: u64,
    ft: FileType,
    scan: &mut Scan,
    seen_files: &mut Option<std::collections::HashSet<PathBuf>>,
) {
    let first = match seen_files {
        Some(seen) => seen.insert(path.clone()),
        None => true,
    };
    if !ft.is_dir() && first {
        let excluded = disc.is_excluded(&path);
        scan.files.push(Found {
            path,
            ino,
            symlink: ft.is_symlink(),
            excluded,
        });
    }
}

/// Reads `dir` against `parts`. Returns false if `dir` could not be read.
fn walk(
    disc: &Discovery,
    dir: &Path,
    parts: &[Part],
    scan: &mut Scan,
    seen_files: &mut Option<std::collections::HashSet<PathBuf>>,
    seen_dirs: &mut std::collections::HashSet<PathBuf>,
) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    if let Part::Literal(name) = first {
        // No readdir needed for a literal name, but the directory is still watched: it is
        // where this file will be created, renamed and modified.
        if !dir.is_dir() {
            return false;
        }
        if seen_dirs.insert(dir.to_path_buf()) {
            scan.dirs.push(dir.to_path_buf());
        }
        let path = dir.join(name);
        if rest.is_empty() {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::MetadataExt;
                add_file(disc, path, meta.ino(), meta.file_type(), scan, seen_files);
            }
        } else {
            walk(disc, &path, rest, scan, seen_files, seen_dirs);
        }
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    if seen_dirs.insert(dir.to_path_buf()) {
        scan.dirs.push(dir.to_path_buf());
    }
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let name = entry.file_name();
        let is_dir = ft.is_dir() || (ft.is_symlink() && entry.path().is_dir());
        match first {
            Part::AnyDirs => {
                // Real directories only: a symlinked directory under `**` could loop.
                if ft.is_dir() {
                    subdirs.push((entry.path(), true));
                }
            }
            Part::Glob(g) => {
                let Some(text) = name.to_str() else { continue };
                if !g.matches(text) {
                    continue;
                }
                if rest.is_empty() {
                    if !is_dir {
                        files.push((entry.path(), entry.ino(), ft));
                    }
                } else if is_dir {
                    subdirs.push((entry.path(), false));
                }
            }
            Part::Literal(_) => {}
        }
    }
    for (path, ino, ft) in files {
        add_file(disc, path, ino, ft, scan, seen_files);
    }
    if let Part::AnyDirs = first {
        walk(disc, dir, rest, scan, seen_files, seen_dirs);
    }
    for (sub, recursive) in subdirs {
        let parts = if recursive { parts } else { rest };
        walk(disc, &sub, parts, scan, seen_files, seen_dirs);
    }
    true
}

/// One change reported by inotify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// A file in a watched directory was written to (or truncated).
    Modified(PathBuf),
    /// Something was created, renamed, or deleted: the set of files may have changed.
    Changed(PathBuf),
    /// Events were lost (queue overflow): anything may have changed.
    Overflow,
}

/// inotify on directories. See the module docs.
pub struct DirWatcher {
    fd: OwnedFd,
    by_dir: HashMap<PathBuf, i32>,
    by_wd: HashMap<i32, PathBuf>,
    buf: Vec<MaybeUninit<u8>>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("watched", &self.by_dir.len())
            .finish()
    }
}

impl DirWatcher {
    pub fn new() -> io::Result<DirWatcher> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(DirWatcher {
            fd,
            by_dir: HashMap::new(),
            by_wd: HashMap::new(),
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
        })
    }

    /// The number of watched directories.
    pub fn len(&self) -> usize {
        self.by_dir.len()
    }

    /// Whether no directory is watched.
    pub fn is_empty(&self) -> bool {
        self.by_dir.is_empty()
    }

    /// Watches `dir` unless already watched. A directory that vanished in the meantime is not
    /// an error (`Ok`); running out of watches (ENOSPC) or memory is.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        if self.by_dir.contains_key(dir) {
            return Ok(());
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::MODIFY
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(&self.fd, dir, flags) {
            Ok(wd) => {
                // Two paths of one directory (a symlink) share a watch descriptor; the last
                // path wins for naming events, either one is correct.
                if let Some(old) = self.by_wd.insert(wd, dir.to_path_buf()) {
                    self.by_dir.remove(&old);
                }
                self.by_dir.insert(dir.to_path_buf(), wd);
                Ok(())
            }
            Err(rustix::io::Errno::NOENT)
            | Err(rustix::io::Errno::NOTDIR)
            | Err(rustix::io::Errno::ACCESS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops watching directories `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        let drop: Vec<PathBuf> = self.by_dir.keys().filter(|d| !keep(d)).cloned().collect();
        for dir in drop {
            if let Some(wd) = self.by_dir.remove(&dir) {
                self.by_wd.remove(&wd);
                // Fails only if the kernel already dropped it (directory deleted).
                let _ = inotify::remove_watch(&self.fd, wd);
            }
        }
    }

    /// Waits up to `timeout` for the inotify descriptor to become readable.
    pub fn poll(&self, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
    }

    /// Reads every queued event without blocking.
    pub fn drain(&mut self, out: &mut Vec<DirEvent>) {
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        let mut dropped = Vec::new();
        // Stops at AGAIN (nothing more queued) or any error (INVAL cannot happen with this
        // buffer size); the periodic rescan is the safety net.
        while let Ok(ev) = reader.next() {
            let flags = ev.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                out.push(DirEvent::Overflow);
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                dropped.push(ev.wd());
                continue;
            }
            let Some(dir) = self.by_wd.get(&ev.wd()) else {
                continue;
            };
            let path = match ev.file_name() {
                Some(name) => {
                    use std::os::unix::ffi::OsStrExt;
                    dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()))
                }
                None => dir.clone(),
            };
            if flags.intersects(
                ReadFlags::CREATE
                    | ReadFlags::DELETE
                    | ReadFlags::MOVED_FROM
                    | ReadFlags::MOVED_TO
                    | ReadFlags::DELETE_SELF
                    | ReadFlags::MOVE_SELF,
            ) {
                out.push(DirEvent::Changed(path));
            } else if flags.contains(ReadFlags::MODIFY) {
                out.push(DirEvent::Modified(path));
            }
        }
        // A deleted or moved directory loses its watch; forget it so it can be re-added.
        for wd in dropped {
            if let Some(dir) = self.by_wd.remove(&wd) {
                self.by_dir.remove(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(p, b"x\n").expect("write");
    }

    fn s(p: &Path) -> String {
        p.to_str().expect("utf-8 temp path").to_string()
    }

    #[test]
    fn relative_or_malformed_patterns_are_rejected_naming_the_pattern() {
        let e = Discovery::new(&["logs/*.log".into()], &[]).expect_err("relative");
        assert_eq!(e.pattern, "logs/*.log");
        let e = Discovery::new(&["/var/log/[a.log".into()], &[]).expect_err("bad glob");
        assert_eq!(e.pattern, "/var/log/[a.log");
        let e = Discovery::new(&["/var/log/*.log".into()], &["[".into()]).expect_err("exclude");
        assert_eq!(e.pattern, "[");
    }

    #[test]
    fn scan_matches_globs_doublestar_and_literal_names_and_lists_dirs() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        touch(&root.join("a.log"));
        touch(&root.join("b.txt"));
        touch(&root.join("x/c.log"));
        touch(&root.join("x/y/d.log"));
        touch(&root.join("x/y/d.log.gz"));
        touch(&root.join("plain/app.log"));
        std::os::unix::fs::symlink(root.join("a.log"), root.join("link.log")).expect("symlink");
        let d = Discovery::new(
            &[
                format!("{}/**/*.log*", s(root)),
                format!("{}/plain/app.log", s(root)),
            ],
            &["*.gz".into()],
        )
        .expect("patterns");
        let scan = d.scan();
        let mut files: Vec<(String, bool, bool)> = scan
            .files
            .iter()
            .map(|f| {
                let rel = f.path.strip_prefix(root).expect("under root");
                (s(rel), f.symlink, f.excluded)
            })
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                ("a.log".into(), false, false),
                ("link.log".into(), true, false),
                ("plain/app.log".into(), false, false),
                ("x/c.log".into(), false, false),
                ("x/y/d.log".into(), false, false),
                ("x/y/d.log.gz".into(), false, true),
            ]
        );
        let mut dirs: Vec<PathBuf> = scan.dirs.clone();
        dirs.sort();
        let mut want = vec![
            root.to_path_buf(),
            root.join("plain"),
            root.join("x"),
            root.join("x/y"),
        ];
        want.sort();
        assert_eq!(dirs, want);
        let ino = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            fs::symlink_metadata(p).expect("stat").ino()
        };
        for f in &scan.files {
            assert_eq!(f.ino, ino(&f.path), "{}", f.path.display());
        }
        assert!(d.is_included(&root.join("x/y/z/e.log")));
        assert!(d.is_included(&root.join("e.log.1")));
        assert!(!d.is_included(&root.join("e.txt")));
        assert!(d.is_included(&root.join("plain/app.log")));
        assert!(!d.is_included(&root.join("plain/app.txt")));
    }

    #[test]
    fn missing_prefix_watches_nearest_existing_ancestor() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = Discovery::new(&[format!("{}/not/yet/*.log", s(t.path()))], &[]).expect("ok");
        let scan = d.scan();
        assert!(scan.files.is_empty());
        assert_eq!(scan.dirs, [t.path().to_path_buf()]);
    }

    #[test]
    fn watcher_reports_modify_and_changes_by_path() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("a.log");
        touch(&f);
        let mut w = DirWatcher::new().expect("inotify");
        w.watch(t.path()).expect("watch");
        w.watch(&t.path().join("missing")).expect("missing is fine");
        assert_eq!(w.len(), 1);
        use std::io::Write;
        let mut h = fs::OpenOptions::new().append(true).open(&f).expect("open");
        h.write_all(b"more\n").expect("write");
        fs::rename(&f, t.path().join("a.log.1")).expect("rename");
        assert!(w.poll(Duration::from_secs(5)));
        let mut evs = Vec::new();
        w.drain(&mut evs);
        assert!(evs.contains(&DirEvent::Modified(f.clone())), "{evs:?}");
        assert!(evs.contains(&DirEvent::Changed(f.clone())), "{evs:?}");
        assert!(evs.contains(&DirEvent::Changed(t.path().join("a.log.1"))));
        w.retain(|_| false);
        assert!(w.is_empty());
    }
}
