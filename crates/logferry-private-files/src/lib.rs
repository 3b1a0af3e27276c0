//! logferry's state on disk: private whatever the umask, never through a symbolic link.
//!
//! What logferry keeps under `data_dir` is the logs themselves (spool segments hold raw syslog
//! frames, dead-letter files whole events) and where it is in its sources (journal cursors, file
//! offsets). The journal is `0640 root:systemd-journal` and container logs are root-only, so this
//! state must be no more readable than that, and no one else may write into it: a writable spool
//! lets a local user inject lines that logferry ships as the host's own.
//!
//! The rules, each enforced here so that no writer can forget one:
//! - **Modes are set at creation, whatever the umask**: directories `0700`, files `0600`
//!   ([`Access`]; an operator group may be given `0750`/`0640`, never more). The mode is passed
//!   to `open(2)`/`mkdir(2)` and then checked on the open descriptor, so a umask that strips bits
//!   (or a group to grant) is corrected on the descriptor, never by path after the fact.
//! - **Never through a link**: every open uses `O_NOFOLLOW`, temporary files are created with
//!   `O_EXCL` after removing a stale one, so a link planted in place of a state file makes the
//!   operation fail with [`is_symlink_refusal`] instead of writing (as root) wherever it points,
//!   or reading another file into CloudWatch.
//! - **`data_dir` is checked at start** ([`prepare_data_dir`]): a link, a directory others can
//!   write into (unless root-owned and sticky, like `/tmp`) or one owned by another non-root user
//!   is refused; state left more open by an earlier version is tightened, each path reported.
//!
//! Why not a crate: `cap-std` confines paths to a directory handle, which would have reshaped
//! every path-based API of the spool and the sources for one property (no escape through links)
//! that `O_NOFOLLOW` on our own fixed file names gives directly; `tempfile` creates `0600` files
//! with `O_EXCL` but under random names, which a crash would leave behind at every checkpoint
//! (ours reuse one fixed name, removed first). What is left is a few `libc` calls.

mod audit;
mod open;

pub use audit::{inspect_data_dir, prepare_data_dir, DataDirReport, Tightened, UnsafeDataDir};
pub use open::{
    create_dir_all, create_new, fsync_dir, is_symlink_refusal, open_append, open_lock, open_read,
    open_write, read, read_to_string, write_atomic,
};

use std::sync::atomic::{AtomicU32, Ordering};

/// The modes (and group) logferry gives what it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Permission bits of directories: `0o700`, or `0o750` with a group.
    pub dir_mode: u32,
    /// Permission bits of files: `0o600`, or `0o640` with a group.
    pub file_mode: u32,
    /// The operator group that may read (never write) the state, if one was configured.
    pub group: Option<u32>,
}

impl Access {
    /// Owner only: the default.
    pub const PRIVATE: Access = Access {
        dir_mode: 0o700,
        file_mode: 0o600,
        group: None,
    };

    /// Owner, plus read access for group `gid`.
    pub const fn group_readable(gid: u32) -> Access {
        Access {
            dir_mode: 0o750,
            file_mode: 0o640,
            group: Some(gid),
        }
    }
}

/// `u32::MAX` is never a real gid (it is `(gid_t)-1`, "no change" to `chown`).
const NO_GROUP: u32 = u32::MAX;
static GROUP: AtomicU32 = AtomicU32::new(NO_GROUP);

/// Sets the process-wide policy: `Some(gid)` lets that group read the state
/// (`data_dir_group`), `None` keeps it owner-only. Call once at start, before any state is
/// written. A process-wide setting rather than a parameter of every call: each writer in every
/// crate must obey the same policy, and the default, if one were missed, is the private one.
pub fn share_with_group(gid: Option<u32>) {
    GROUP.store(gid.unwrap_or(NO_GROUP), Ordering::Relaxed);
}

/// The policy in force (see [`share_with_group`]).
pub fn access() -> Access {
    match GROUP.load(Ordering::Relaxed) {
        NO_GROUP => Access::PRIVATE,
        gid => Access::group_readable(gid),
    }
}

/// Renders permission bits the way `ls`/`chmod` users read them: `0755`.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Looks a group up by name or number (`"adm"`, `"4"`), as `data_dir_group` is written.
pub fn resolve_group(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return (gid != NO_GROUP).then_some(gid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: every pointer is valid for the call; getgrnam_r writes only into `grp` and `buf`
    // (of the length given) and sets `result` to `&grp` or null.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}
