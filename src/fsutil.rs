//! File helpers: [`atomic_write`] writes a file so that readers see either the old or the
//! complete new content, never a half-written one (temp file, fsync, rename, fsync dir).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, ThauError};

/// Writes `bytes` to `path` atomically: a temp file in the same directory is written and
/// fsynced, then renamed over `path`, then the directory is fsynced so the rename survives
/// a power loss.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, tmp) = temp_beside(path)?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is on disk.
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ThauError::io(path, e));
    }
    Ok(())
}

/// The directory of `path` (created if missing) and a fresh temp file name in it.
fn temp_beside(path: &Path) -> Result<(&Path, std::path::PathBuf)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| ThauError::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| ThauError::Invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    Ok((dir, tmp))
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| ThauError::io(path, e))
}

/// Like [`atomic_write`], for output produced piece by piece: `fill` writes into a buffered
/// temp file next to `path`, which replaces `path` only if `fill` succeeds.
pub fn atomic_write_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::result::Result<T, String>,
) -> Result<T> {
    let (dir, tmp) = temp_beside(path)?;
    let file = File::create(&tmp).map_err(|e| ThauError::io(&tmp, e))?;
    let mut w = std::io::BufWriter::new(file);
    let value = match fill(&mut w) {
        Ok(v) => v,
        Err(e) => {
            drop(w);
            let _ = fs::remove_file(&tmp);
            return Err(ThauError::Runtime(format!("{}: {e}", path.display())));
        }
    };
    let result = (|| {
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ThauError::io(path, e));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind");
    }
}
