//! `data_dir` at start: refuse a place others could swap or read, tighten what is too open.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{access, create_dir_all, mode_string};

/// A `data_dir` logferry refuses to keep state in, and why. Each is a fix for the operator,
/// never something logferry works around (state in such a place can be read or replaced by
/// another local user).
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDataDir {
    #[error(
        "{} is a symbolic link: logferry keeps its state only in a real directory \
         (point data_dir at the target instead)",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is writable by other users (mode {}): they could replace logferry's state \
         (chmod o-w, or use a directory of logferry's own)",
        path.display(), mode_string(*mode)
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error(
        "{} belongs to uid {owner}, neither logferry's user (uid {me}) nor root: that user \
         could read or replace logferry's state (chown it to logferry's user)",
        path.display()
    )]
    OwnedByAnotherUser { path: PathBuf, owner: u32, me: u32 },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UnsafeDataDir {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        UnsafeDataDir::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A path whose mode [`prepare_data_dir`] narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub old_mode: u32,
    pub new_mode: u32,
}

/// What [`inspect_data_dir`] saw, for `logferry check`.
#[derive(Debug, Clone)]
pub struct DataDirReport {
    pub path: PathBuf,
    /// `None` while the directory does not exist yet.
    pub owner: Option<u32>,
    pub mode: Option<u32>,
    /// Paths under it more open than the policy, with their mode now.
    pub too_open: Vec<(PathBuf, u32)>,
    /// Links found inside it (logferry refuses to start with one there).
    pub links: Vec<PathBuf>,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The checks on a directory logferry keeps state in, or creates state into.
fn check_dir(path: &Path, meta: &fs::Metadata) -> Result<(), UnsafeDataDir> {
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(UnsafeDataDir::OwnedByAnotherUser {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode();
    let sticky_root = mode & 0o1000 != 0 && meta.uid() == 0;
    if mode & 0o002 != 0 && !sticky_root {
        return Err(UnsafeDataDir::WritableByOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Refuses `data_dir` if it is unsafe, checks the nearest existing parent if it must be created,
/// and lists what under it is more open than the policy. Changes nothing.
pub fn inspect_data_dir(dir: &Path) -> Result<DataDirReport, UnsafeDataDir> {
    let mut report = DataDirReport {
        path: dir.to_path_buf(),
        owner: None,
        mode: None,
        too_open: Vec::new(),
        links: Vec::new(),
    };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(UnsafeDataDir::Symlink {
                path: dir.to_path_buf(),
            })
        }
        Ok(m) if !m.is_dir() => {
            return Err(UnsafeDataDir::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(m) => {
            check_dir(dir, &m)?;
            report.owner = Some(m.uid());
            report.mode = Some(m.mode() & 0o7777);
            walk(dir, &m, 0, &mut report)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // logferry will create it: the place it creates into must be safe as well.
            let mut parent = dir.parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                match fs::metadata(p) {
                    Ok(m) if m.is_dir() => {
                        check_dir(p, &m)?;
                        break;
                    }
                    Ok(_) => {
                        return Err(UnsafeDataDir::NotADirectory {
                            path: p.to_path_buf(),
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => parent = p.parent(),
                    Err(e) => return Err(UnsafeDataDir::io("inspecting", p, e)),
                }
            }
        }
        Err(e) => return Err(UnsafeDataDir::io("inspecting", dir, e)),
    }
    Ok(report)
}

/// State logferry wrote is a few levels deep (`spool/NAME/SEGMENT`); anything deeper was put
/// there by someone else and is not descended into.
const MAX_DEPTH: usize = 8;

fn walk(
    path: &Path,
    meta: &fs::Metadata,
    depth: usize,
    report: &mut DataDirReport,
) -> Result<(), UnsafeDataDir> {
    let policy = access();
    let allowed = if meta.is_dir() {
        policy.dir_mode
    } else {
        policy.file_mode
    };
    let mode = meta.mode() & 0o7777;
    if mode & !allowed != 0 {
        report.too_open.push((path.to_path_buf(), mode));
    }
    if !meta.is_dir() || depth >= MAX_DEPTH {
        return Ok(());
    }
    let entries = fs::read_dir(path).map_err(|e| UnsafeDataDir::io("listing", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| UnsafeDataDir::io("listing", path, e))?;
        let child = entry.path();
        let m =
            fs::symlink_metadata(&child).map_err(|e| UnsafeDataDir::io("inspecting", &child, e))?;
        if m.file_type().is_symlink() {
            report.links.push(child);
        } else if m.is_dir() || m.is_file() {
            walk(&child, &m, depth + 1, report)?;
        }
    }
    Ok(())
}

/// Makes `data_dir` ready for state, at start, before anything is written: refuses an unsafe
/// one ([`UnsafeDataDir`]), or one holding a link (a link in place of a segment or a cursor
/// would redirect logferry's writes as root); creates it (and missing parents) with the
/// policy's mode; narrows every path under it that is more open than the policy, never
/// widening one. Returns what was narrowed, for one log line per path.
pub fn prepare_data_dir(dir: &Path) -> Result<Vec<Tightened>, UnsafeDataDir> {
    let report = inspect_data_dir(dir)?;
    if let Some(link) = report.links.into_iter().next() {
        return Err(UnsafeDataDir::Symlink { path: link });
    }
    if report.owner.is_none() {
        create_dir_all(dir).map_err(|e| UnsafeDataDir::io("creating", dir, e))?;
    }
    let policy = access();
    let mut tightened = Vec::new();
    for (path, old_mode) in report.too_open {
        let allowed = if path.is_dir() {
            policy.dir_mode
        } else {
            policy.file_mode
        };
        let new_mode = old_mode & allowed;
        // By path, not descriptor: the walk above found no link, and data_dir is now known not
        // to be writable by anyone else, so nothing can be swapped in between.
        fs::set_permissions(&path, fs::Permissions::from_mode(new_mode))
            .map_err(|e| UnsafeDataDir::io("tightening the mode of", &path, e))?;
        tightened.push(Tightened {
            path,
            old_mode,
            new_mode,
        });
    }
    Ok(tightened)
}
