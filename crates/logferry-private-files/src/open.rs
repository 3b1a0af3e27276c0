//! Creating and opening state files and directories: mode at creation, no links followed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::access;

/// Whether `e` is this crate's refusal to go through a symbolic link (`ELOOP` from
/// `O_NOFOLLOW`, or a link found where a directory was expected).
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
        || e.get_ref()
            .is_some_and(|inner| inner.is::<SymlinkRefused>())
}

#[derive(Debug)]
struct SymlinkRefused(String);

impl std::fmt::Display for SymlinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SymlinkRefused {}

fn symlink_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        SymlinkRefused(format!(
            "{} is a symbolic link: logferry never reads or writes its state through a link \
             (remove it)",
            path.display()
        )),
    )
}

/// `ELOOP` from `O_NOFOLLOW` says "too many levels of symbolic links", which reads like a
/// loop; say what happened instead.
fn explain(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        symlink_refused(path)
    } else {
        e
    }
}

fn nofollow(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

/// Gives an open file or directory exactly the policy's mode and group: the umask may have
/// stripped bits from the mode passed at creation, and a group is set by `fchown`. Both act on
/// the descriptor, so nothing can be swapped in between.
fn enforce(file: &File, want_mode: u32) -> io::Result<()> {
    let meta = file.metadata()?;
    let fd = file.as_raw_fd();
    if meta.mode() & 0o7777 != want_mode {
        // SAFETY: fd is an open descriptor owned by `file` for the duration of the call.
        if unsafe { libc::fchmod(fd, want_mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(gid) = access().group {
        if meta.gid() != gid {
            // SAFETY: as above; uid -1 leaves the owner unchanged.
            if unsafe { libc::fchown(fd, u32::MAX, gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn open_file(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let mode = access().file_mode;
    let file = nofollow(opts.mode(mode))
        .open(path)
        .map_err(|e| explain(path, e))?;
    enforce(&file, mode)?;
    Ok(file)
}

/// Opens `path` for appending, creating it `0600` if missing (dead-letter files).
pub fn open_append(path: &Path) -> io::Result<File> {
    open_file(path, OpenOptions::new().create(true).append(true))
}

/// Creates `path`, which must not exist (spool segments, temporary files).
pub fn create_new(path: &Path) -> io::Result<File> {
    open_file(path, OpenOptions::new().write(true).create_new(true))
}

/// Opens an existing file for writing, without truncating it (a segment being appended to).
pub fn open_write(path: &Path) -> io::Result<File> {
    open_file(path, OpenOptions::new().write(true))
}

/// Opens (creating if needed) a lock file; its content is never read or truncated.
pub fn open_lock(path: &Path) -> io::Result<File> {
    open_file(
        path,
        OpenOptions::new().write(true).create(true).truncate(false),
    )
}

/// Opens a state file for reading, refusing a link (which could make logferry read, and ship,
/// a file it was never meant to).
pub fn open_read(path: &Path) -> io::Result<File> {
    nofollow(OpenOptions::new().read(true))
        .open(path)
        .map_err(|e| explain(path, e))
}

/// [`std::fs::read`] without following a link.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_read(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`std::fs::read_to_string`] without following a link.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut buf = String::new();
    open_read(path)?.read_to_string(&mut buf)?;
    Ok(buf)
}

/// Creates `path` and its missing parents like [`std::fs::create_dir_all`], each new directory
/// with the policy's mode. `path` itself must be a real directory, not a link to one.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(path)),
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A parent above the state (say /var/lib as a link to /data) is the administrator's
        // choice; only what logferry creates, and `path` itself, must be real directories.
        if !parent.is_dir() {
            create_dir_all(parent)?;
        }
    }
    let mode = access().dir_mode;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        // Created concurrently: fine if it is a directory (checked on open below).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let dir = open_dir(path)?;
    enforce(&dir, mode)
}

fn open_dir(path: &Path) -> io::Result<File> {
    nofollow(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC),
    )
    .open(path)
    .map_err(|e| explain(path, e))
}

/// fsyncs a directory, making a rename or creation in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    open_dir(dir)?.sync_all()
}

/// Replaces `path` with `contents` so that a reader sees the old or the new content, never a
/// mix, even across a crash or power cut: write `.NAME.tmp` (created `O_EXCL` after removing a
/// stale one or a planted link), fsync, rename over `path`, fsync the directory. With
/// `data_only`, the temp file gets `fdatasync` (enough for a file whose size is its content).
pub fn write_atomic(path: &Path, contents: &[u8], data_only: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("state path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("state path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    write_temp(&tmp, contents, data_only).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    // rename(2) replaces a link at `path` with the file; it never writes through it.
    fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

fn write_temp(tmp: &Path, contents: &[u8], data_only: bool) -> io::Result<()> {
    // unlink never follows a link: a planted one is removed, not its target.
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = create_new(tmp)?;
    f.write_all(contents)?;
    if data_only {
        f.sync_data()
    } else {
        f.sync_all()
    }
}
