//! Crash-safe file writes: temp file, fsync, rename, fsync of the directory.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::store::StoreError;

/// Prefix of our temp files; anything with it found under the lock is debris of a crash.
pub(crate) const TEMP_PREFIX: &str = ".crossbar-tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that readers see the old or the new file, never a mix, and a
/// crash leaves one of the two.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = durable_temp(dir, bytes, mode)?;
    install(&tmp, path)?;
    sync_dir(dir)
}

/// Writes `bytes` to a new temp file in `dir` and fsyncs it (this can run outside any lock).
pub(crate) fn durable_temp(dir: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, StoreError> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    if let Err(e) = write_temp(&tmp, bytes, mode) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Renames a durable temp file over `path`; the rename is durable once the directory is synced.
pub(crate) fn install(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        StoreError::io("rename into", path)(e)
    })
}

fn write_temp(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(StoreError::io("create", tmp))?;
    file.write_all(bytes).map_err(StoreError::io("write", tmp))?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(StoreError::io("chmod", tmp))?;
    file.sync_all().map_err(StoreError::io("fsync", tmp))
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))
}

/// Appends `line` durably. If a crash tore the previous append, the torn tail is ended first so
/// that this line stays whole.
pub(crate) fn append_line(path: &Path, line: &str) -> Result<(), StoreError> {
    append_line_unsynced(path, line)?.sync_data().map_err(StoreError::io("fsync", path))
}

/// [`append_line`] without the fsync; the caller syncs the returned file (outside its lock).
pub(crate) fn append_line_unsynced(path: &Path, line: &str) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(StoreError::io("open", path))?;
    let mut text = String::with_capacity(line.len() + 1);
    if !ends_with_newline(&mut file).map_err(StoreError::io("read", path))? {
        text.push('\n');
    }
    text.push_str(line);
    file.write_all(text.as_bytes()).map_err(StoreError::io("append to", path))?;
    Ok(file)
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Removes `path` durably; whether it existed.
pub(crate) fn remove(path: &Path) -> Result<bool, StoreError> {
    let removed = remove_unsynced(path)?;
    if removed {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(removed)
}

/// Removes `path`; the caller syncs its directory.
pub(crate) fn remove_unsynced(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}

/// Reads `path`, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_mends_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inventory.txt");
        fs::write(&path, "0x0001 a b /CN=x\n0x0002 a").expect("write");
        append_line(&path, "0x0003 a b /CN=z\n").expect("append");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "0x0001 a b /CN=x\n0x0002 a\n0x0003 a b /CN=z\n");
    }

    #[test]
    fn write_replaces_whole_files_and_sets_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca_key.pem");
        write(&path, b"one", 0o600).expect("write");
        write(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty());
    }
}
