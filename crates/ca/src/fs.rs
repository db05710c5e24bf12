//! The CA store on disk, in puppetserver's layout, so a directory made by `puppetserver ca
//! setup` is served as it is and the real `puppetserver ca` tools can read ours.

mod atomic;
mod layout;
mod lock;
mod recover;

use std::{
    collections::HashSet,
    fs,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use pki::{inventory, Certname, IssuedCert, Serial};

use self::{layout::Layout, lock::DirLock};
use crate::store::{
    CaStore, CrlUpdateFailure, CrlUpdateFn, Existing, IssueFrom, Stamped, StoreError,
};

pub use recover::Recovery;

/// Replaces `path` with `bytes` durably (temp file, fsync, rename, directory fsync).
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    atomic::write(path, bytes, mode)
}

/// Files of a new CA, written by [`FsStore::create`].
#[derive(Debug, Clone)]
pub struct NewCa {
    pub cert_pem: String,
    pub key_pem: String,
    pub public_key_pem: String,
    pub crl_pem: String,
    /// The serial the next certificate gets.
    pub next_serial: Serial,
    /// The CA certificate's own inventory line.
    pub inventory: String,
}

/// How many serials one trip to the `serial` file reserves.
const SERIAL_BLOCK: u128 = 32;

/// A CA directory in puppetserver's layout.
#[derive(Debug, Clone)]
pub struct FsStore {
    layout: Layout,
    /// Serials reserved by this store and not yet used.
    serials: Arc<Mutex<Range<u128>>>,
}

impl FsStore {
    /// Opens an existing CA directory and repairs what a crash may have left (under the lock).
    pub fn open(dir: &Path) -> Result<(Self, Recovery), StoreError> {
        let store = Self::at(dir);
        store.check_complete()?;
        let recovery = {
            let _lock = store.lock()?;
            store.ensure_subdirs()?;
            recover::run(&store.layout)?
        };
        Ok((store, recovery))
    }

    /// Looks at an existing CA directory without changing it (`crossbar check`): every file
    /// [`FsStore::open`] needs must be there. Nothing is locked or repaired.
    pub fn inspect(dir: &Path) -> Result<Self, StoreError> {
        Self::inspect_files(dir, true)
    }

    /// Like [`FsStore::inspect`]; with `whole` false, only the CA's certificate and key must be
    /// there (a CA whose state is in a database).
    pub fn inspect_files(dir: &Path, whole: bool) -> Result<Self, StoreError> {
        let store = Self::at(dir);
        if whole {
            store.check_complete()?;
        } else {
            for file in ["ca_crt.pem", "ca_key.pem"] {
                if !dir.join(file).is_file() {
                    return Err(StoreError::Incomplete {
                        dir: dir.to_owned(),
                        missing: file.into(),
                    });
                }
            }
        }
        Ok(store)
    }

    /// Writes a new CA into `dir` (created if needed); refuses if any CA file is there already.
    pub fn create(dir: &Path, ca: &NewCa) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let store = Self::at(dir);
        let _lock = store.lock()?;
        if store.layout.required().iter().any(|p| p.exists()) {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        store.ensure_subdirs()?;
        let l = &store.layout;
        atomic::write(&l.ca_key(), ca.key_pem.as_bytes(), 0o600)?;
        atomic::write(&l.ca_pub(), ca.public_key_pem.as_bytes(), 0o644)?;
        atomic::write(&l.ca_crl(), ca.crl_pem.as_bytes(), 0o644)?;
        atomic::write(&l.serial(), ca.next_serial.to_file().as_bytes(), 0o644)?;
        atomic::write(&l.inventory(), ca.inventory.as_bytes(), 0o644)?;
        atomic::write(&l.infra_inventory(), b"", 0o644)?;
        atomic::write(&l.infra_serials(), b"", 0o644)?;
        // The certificate last: a directory with ca_crt.pem is a complete CA.
        atomic::write(&l.ca_crt(), ca.cert_pem.as_bytes(), 0o644)?;
        Ok(store.clone())
    }

    /// Writes a certificate (or, with `request`, a pending request) of an exported CA as it is.
    pub(crate) fn install_exported(
        &self,
        name: &Certname,
        pem: &[u8],
        request: bool,
    ) -> Result<(), StoreError> {
        let path = if request { self.layout.request(name) } else { self.layout.signed(name) };
        atomic::write(&path, pem, 0o644)
    }

    fn at(dir: &Path) -> Self {
        Self { layout: Layout::new(dir), serials: Arc::new(Mutex::new(0..0)) }
    }

    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    fn lock(&self) -> Result<DirLock, StoreError> {
        DirLock::acquire(&self.layout.lock())
    }

    /// `puppetserver ca setup` makes no `requests/`; create what is missing.
    fn ensure_subdirs(&self) -> Result<(), StoreError> {
        for sub in [self.layout.signed_dir(), self.layout.requests_dir()] {
            fs::create_dir_all(&sub).map_err(StoreError::io("create directory", &sub))?;
        }
        Ok(())
    }

    fn check_complete(&self) -> Result<(), StoreError> {
        let missing: Vec<String> = self
            .layout
            .required()
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Incomplete { dir: self.layout.dir.clone(), missing: missing.join(", ") })
    }

    fn stamped(path: &Path) -> Result<Stamped, StoreError> {
        Self::stamped_optional(path)?.ok_or_else(|| StoreError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    fn stamped_optional(path: &Path) -> Result<Option<Stamped>, StoreError> {
        let Some(bytes) = atomic::read_optional(path)? else {
            return Ok(None);
        };
        let modified =
            fs::metadata(path).and_then(|m| m.modified()).map_err(StoreError::io("stat", path))?;
        Ok(Some(Stamped::new(bytes, modified)))
    }

    fn read_serial(&self) -> Result<Serial, StoreError> {
        let path = self.layout.serial();
        let text = fs::read_to_string(&path).map_err(StoreError::io("read", &path))?;
        Serial::parse_file(&text).map_err(|e| StoreError::Corrupt { path, what: e.to_string() })
    }

    fn ensure_no_conflict(&self, name: &Certname, overwrite: bool) -> Result<(), StoreError> {
        if overwrite {
            return Ok(());
        }
        match self.existing(name)? {
            Some(existing) => Err(StoreError::Conflict { name: name.clone(), existing }),
            None => Ok(()),
        }
    }

    /// Takes the next block of serials from the `serial` file, under the lock; the file is
    /// durably advanced before the block is used.
    fn reserve_block(&self) -> Result<Range<u128>, StoreError> {
        let _lock = self.lock()?;
        let start = self.read_serial()?;
        let end = Serial::from_u128(start.value().saturating_add(SERIAL_BLOCK));
        atomic::write(&self.layout.serial(), end.to_file().as_bytes(), 0o644)?;
        Ok(start.value()..end.value())
    }

    /// Under the lock: the checks that make `issued` still welcome, then the rename, the
    /// inventory line and the request removal. Returns the inventory file to sync and whether a
    /// request was removed.
    fn install_issued(
        &self,
        name: &Certname,
        tmp: &Path,
        issued: &IssuedCert,
        from: IssueFrom<'_>,
        overwrite: bool,
    ) -> Result<(fs::File, bool), StoreError> {
        let _lock = self.lock()?;
        match from {
            IssueFrom::Request(expected) => {
                if self.request(name)?.as_deref() != Some(expected) {
                    return Err(StoreError::RequestChanged(name.clone()));
                }
                if !overwrite && self.layout.signed(name).exists() {
                    let existing = Existing::Certificate;
                    return Err(StoreError::Conflict { name: name.clone(), existing });
                }
            }
            IssueFrom::Fresh => self.ensure_no_conflict(name, overwrite)?,
            IssueFrom::Renewal => {}
        }
        // The inventory line first: a crash between the two leaves a record of a serial that
        // was never served, never a served certificate missing from the inventory.
        let line = inventory::line(issued.serial, &issued.validity, name.as_str());
        let inventory = atomic::append_line_unsynced(&self.layout.inventory(), &line)?;
        atomic::install(tmp, &self.layout.signed(name))?;
        let removed = match from {
            IssueFrom::Request(_) => atomic::remove_unsynced(&self.layout.request(name))?,
            IssueFrom::Fresh | IssueFrom::Renewal => false,
        };
        Ok((inventory, removed))
    }
}

impl CaStore for FsStore {
    fn ca_bundle(&self) -> Result<Stamped, StoreError> {
        Self::stamped(&self.layout.ca_crt())
    }

    fn crl_chain(&self) -> Result<Stamped, StoreError> {
        Self::stamped(&self.layout.ca_crl())
    }

    fn ca_key_pem(&self) -> Result<String, StoreError> {
        let path = self.layout.ca_key();
        fs::read_to_string(&path).map_err(StoreError::io("read", &path))
    }

    fn certificate(&self, name: &Certname) -> Result<Option<Stamped>, StoreError> {
        Self::stamped_optional(&self.layout.signed(name))
    }

    fn request(&self, name: &Certname) -> Result<Option<Vec<u8>>, StoreError> {
        atomic::read_optional(&self.layout.request(name))
    }

    fn existing(&self, name: &Certname) -> Result<Option<Existing>, StoreError> {
        if self.layout.signed(name).exists() {
            return Ok(Some(Existing::Certificate));
        }
        Ok(self.layout.request(name).exists().then_some(Existing::Request))
    }

    fn certificates(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        read_pem_dir(&self.layout.signed_dir())
    }

    fn requests(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        read_pem_dir(&self.layout.requests_dir())
    }

    fn expired_serials(&self, now: time::OffsetDateTime) -> Result<HashSet<Vec<u8>>, StoreError> {
        let path = self.layout.inventory();
        let text = fs::read_to_string(&path).map_err(StoreError::io("read", &path))?;
        Ok(inventory::parse(&text)
            .filter(|e| e.validity.is_some_and(|v| v.not_after < now))
            .map(|e| e.serial.to_be_bytes())
            .collect())
    }

    fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(pem_names(&self.layout.requests_dir())?.len())
    }

    fn save_request(&self, name: &Certname, pem: &[u8], overwrite: bool) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        self.ensure_no_conflict(name, overwrite)?;
        atomic::write(&self.layout.request(name), pem, 0o644)
    }

    fn delete_request(&self, name: &Certname) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        atomic::remove(&self.layout.request(name))
    }

    fn delete_certificate(&self, name: &Certname) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        atomic::remove(&self.layout.signed(name))
    }

    fn reserve_serial(&self) -> Result<Serial, StoreError> {
        let poisoned = || StoreError::Corrupt {
            path: self.layout.serial(),
            what: "serial reservation lock poisoned".into(),
        };
        let mut reserved = self.serials.lock().map_err(|_| poisoned())?;
        if reserved.is_empty() {
            *reserved = self.reserve_block()?;
        }
        let serial = reserved.start;
        reserved.start += 1;
        Ok(Serial::from_u128(serial))
    }

    fn store_issued(
        &self,
        name: &Certname,
        issued: &IssuedCert,
        from: IssueFrom<'_>,
        overwrite: bool,
        _audit: &crate::audit::AuditEvent,
    ) -> Result<(), StoreError> {
        // The certificate's bytes are made durable before the lock, so that concurrent signings
        // fsync in parallel (ext4 commits them together) and the lock is held only briefly.
        let signed_dir = self.layout.signed_dir();
        let tmp = atomic::durable_temp(&signed_dir, issued.pem.as_bytes(), 0o644)?;
        let installed = self.install_issued(name, &tmp, issued, from, overwrite);
        let (inventory, removed_request) = installed.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        inventory.sync_data().map_err(StoreError::io("fsync", self.layout.inventory()))?;
        atomic::sync_dir(&signed_dir)?;
        if removed_request {
            atomic::sync_dir(&self.layout.requests_dir())?;
        }
        Ok(())
    }

    fn update_crl(&self, update: &mut CrlUpdateFn<'_>) -> Result<bool, CrlUpdateFailure> {
        let _lock = self.lock()?;
        let path = self.layout.ca_crl();
        let text = fs::read_to_string(&path).map_err(StoreError::io("read", &path))?;
        let blocks = pki::pemfile::raw_blocks(&text);
        let Some(first) = blocks.first() else {
            return Err(StoreError::Corrupt { path, what: "no CRL in the file".into() }.into());
        };
        let der = pki::pemfile::single_block(first.as_bytes(), &["X509 CRL"])
            .map_err(|e| StoreError::Corrupt { path: path.clone(), what: e.to_string() })?;
        let Some(new_der) = update(&der)? else {
            return Ok(false);
        };
        let mut out = pki::pemfile::encode("X509 CRL", &new_der);
        for rest in &blocks[1..] {
            out.push_str(rest);
        }
        atomic::write(&path, out.as_bytes(), 0o644)?;
        Ok(true)
    }
}

/// Certnames of the `*.pem` files in `dir`; files whose names are not certnames are skipped.
fn pem_names(dir: &Path) -> Result<Vec<Certname>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let file_name = entry.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
            continue;
        };
        match Certname::parse(stem) {
            Ok(name) => names.push(name),
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "ignoring a file whose name is not a certname")
            }
        }
    }
    Ok(names)
}

fn read_pem_dir(dir: &Path) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for name in pem_names(dir)? {
        let path: PathBuf = dir.join(format!("{name}.pem"));
        // A file removed between listing and reading is simply gone.
        if let Some(bytes) = atomic::read_optional(&path)? {
            out.push((name, bytes));
        }
    }
    Ok(out)
}
