//! The CA directory's exclusive lock, shared by every crossbar process that opens the directory.
//!
//! `flock(2)` on a lock file: each acquisition opens the file anew, so threads of one process
//! exclude each other as processes do, and the kernel drops the lock when a holder dies
//! (even by `kill -9`). On NFS, Linux maps `flock` to POSIX byte-range locks.

use std::{fs::File, path::Path};

use crate::store::StoreError;

/// Held while it lives.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io("open lock file", path))?;
        file.lock().map_err(StoreError::io("lock", path))?;
        Ok(Self { _file: file })
    }
}
