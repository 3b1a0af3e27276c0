//! The checkpoint file: every file's saved position, as JSON (`DATA_DIR/file/SOURCE.json`:
//! path, device, inode, fingerprint, offset).
//!
//! An unreadable checkpoint is not fatal: the files are read again from their start, which
//! duplicates lines rather than skipping them.

use std::path::{Path, PathBuf};

use logferry_tail::tailer::SavedPosition;
use serde::{Deserialize, Serialize};

/// Where a source keeps its file positions.
pub fn checkpoint_path(data_dir: &Path, source: &str) -> PathBuf {
    data_dir.join("file").join(format!("{source}.json"))
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    files: Vec<SavedPosition>,
}

/// The saved positions, or `None` when this source never saved any (its first start).
pub(super) fn load(path: &Path) -> Option<Vec<SavedPosition>> {
    let files = match crate::state::load(path) {
        Ok(None) => return None,
        Ok(Some(text)) => match serde_json::from_str::<Checkpoint>(&text) {
            Ok(c) => c.files,
            Err(e) => {
                // Starting over re-reads files (duplicates), which beats skipping them.
                tracing::error!(path = %path.display(), error = %e, "ignoring an unreadable checkpoint file, files are read again from their start");
                Vec::new()
            }
        },
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the checkpoint file, files are read again from their start");
            Vec::new()
        }
    };
    Some(files)
}

/// The checkpoint file's content for these positions.
pub(super) fn encode(files: Vec<SavedPosition>) -> Option<Vec<u8>> {
    match serde_json::to_vec(&Checkpoint { version: 1, files }) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the checkpoint");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_unreadable_and_saved_checkpoints() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = checkpoint_path(dir.path(), "app");
        assert_eq!(path, dir.path().join("file/app.json"));
        assert!(load(&path).is_none(), "no file: a first start");
        crate::state::save_atomic(&path, b"{not json").expect("save");
        assert_eq!(
            load(&path).map(|f| f.len()),
            Some(0),
            "unreadable: from the start"
        );
        let text = encode(Vec::new()).expect("encode");
        crate::state::save_atomic(&path, &text).expect("save");
        assert_eq!(load(&path).map(|f| f.len()), Some(0));
    }
}
