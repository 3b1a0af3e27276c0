//! Small durable state files: journal cursors, file offsets.
//!
//! Saved the only way that survives a crash or power cut at any instant: write a temporary file
//! in the same directory, fsync it, rename it over the old one, fsync the directory. A reader
//! sees either the old or the new content, never a torn mix.

use std::path::Path;

use logferry_private_files as private_files;

/// Atomically replaces `path` with `contents`, creating its directory if needed. The file is
/// `0600` (directories `0700`) whatever the umask, and a link planted at `path` is replaced,
/// never written through (see `logferry-private-files`).
pub fn save_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("state path has no directory"))?;
    private_files::create_dir_all(dir)?;
    private_files::write_atomic(path, contents, false)
}

/// Reads a state file; `None` when it does not exist. A link in its place is an error: logferry
/// never reads its state through one.
pub fn load(path: &Path) -> std::io::Result<Option<String>> {
    match private_files::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn saves_and_replaces() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("a/b/cursor");
        assert_eq!(load(&p).expect("load"), None);
        save_atomic(&p, b"one").expect("save");
        save_atomic(&p, b"two").expect("save");
        assert_eq!(load(&p).expect("load").as_deref(), Some("two"));
        let names: Vec<_> = fs::read_dir(p.parent().expect("dir"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}
