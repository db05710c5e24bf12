//! Where puppetserver keeps each CA file (reference section 7).

use std::path::{Path, PathBuf};

use pki::Certname;

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }
    pub(crate) fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca_crt.pem")
    }
    pub(crate) fn ca_key(&self) -> PathBuf {
        self.dir.join("ca_key.pem")
    }
    pub(crate) fn ca_pub(&self) -> PathBuf {
        self.dir.join("ca_pub.pem")
    }
    pub(crate) fn ca_crl(&self) -> PathBuf {
        self.dir.join("ca_crl.pem")
    }
    pub(crate) fn serial(&self) -> PathBuf {
        self.dir.join("serial")
    }
    pub(crate) fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.txt")
    }
    pub(crate) fn infra_inventory(&self) -> PathBuf {
        self.dir.join("infra_inventory.txt")
    }
    pub(crate) fn infra_serials(&self) -> PathBuf {
        self.dir.join("infra_serials")
    }
    pub(crate) fn signed_dir(&self) -> PathBuf {
        self.dir.join("signed")
    }
    pub(crate) fn requests_dir(&self) -> PathBuf {
        self.dir.join("requests")
    }
    pub(crate) fn signed(&self, name: &Certname) -> PathBuf {
        self.signed_dir().join(format!("{name}.pem"))
    }
    pub(crate) fn request(&self, name: &Certname) -> PathBuf {
        self.requests_dir().join(format!("{name}.pem"))
    }
    /// Our lock file. puppetserver ignores unknown files in its cadir.
    pub(crate) fn lock(&self) -> PathBuf {
        self.dir.join(".crossbar.lock")
    }
    /// The files puppetserver requires all or none of (`initialize!`).
    pub(crate) fn required(&self) -> [PathBuf; 5] {
        [self.ca_crt(), self.ca_key(), self.ca_crl(), self.serial(), self.inventory()]
    }
}
