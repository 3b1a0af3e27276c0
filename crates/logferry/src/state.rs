//! Small durable state files: journal cursors, file offsets.
//!
//! Saved the only way that survives a crash or power cut at any instant: write a temporary file
//! in the same directory, fsync it, rename it over the old one, fsync the directory. A reader
//! sees either the old or the new content, never a torn mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Atomically replaces `path` with `contents`.
pub fn save_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("state path has no directory"))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("state path has no file name"))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Reads a state file; `None` when it does not exist.
pub fn load(path: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
