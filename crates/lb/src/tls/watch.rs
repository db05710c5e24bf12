//! Keeps the TLS snapshot current: rebuilds it when a file changes (or a pulled CRL arrives),
//! swaps it atomically, and keeps the old one when the new material is bad.

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{TlsError, TlsSnapshot};
use crate::config::TlsFiles;

/// The live TLS configuration of the listener.
pub(crate) struct TlsState {
    files: TlsFiles,
    current: ArcSwap<TlsSnapshot>,
    /// A CRL fetched from the CA pool; replaces the CRL file when set.
    pulled_crl: Mutex<Option<Vec<u8>>>,
    changed: watch::Sender<Arc<TlsSnapshot>>,
}

/// A file's identity and version, cheap to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    mtime_ns: i128,
}

impl TlsState {
    /// Builds the first snapshot (from `initial_crl` instead of the CRL file when given, e.g. a
    /// cached pulled CRL); an error here is fatal, there is nothing to fall back to. Every new
    /// snapshot is published on `changed` (which may outlive this state, across config
    /// reloads), or on a new channel when none is given.
    pub(crate) fn load(
        files: TlsFiles,
        initial_crl: Option<Vec<u8>>,
        changed: Option<watch::Sender<Arc<TlsSnapshot>>>,
    ) -> Result<Arc<Self>, TlsError> {
        let snapshot = Arc::new(TlsSnapshot::build(files.read(initial_crl.as_deref())?)?);
        let changed = match changed {
            Some(sender) => {
                sender.send_replace(snapshot.clone());
                sender
            }
            None => watch::channel(snapshot.clone()).0,
        };
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::new(snapshot),
            pulled_crl: Mutex::new(initial_crl),
            changed,
        }))
    }

    /// The channel every new snapshot is published on.
    pub(crate) fn snapshots(&self) -> watch::Sender<Arc<TlsSnapshot>> {
        self.changed.clone()
    }

    /// The snapshot new connections use.
    pub(crate) fn current(&self) -> Arc<TlsSnapshot> {
        self.current.load_full()
    }

    /// Rebuilds from the files (and the pulled CRL); on failure keeps the current snapshot.
    pub(crate) fn rebuild(&self, reason: &str) -> Result<Arc<TlsSnapshot>, TlsError> {
        let pulled = self.pulled_crl.lock().ok().and_then(|crl| crl.clone());
        let material = self.files.read(pulled.as_deref())?;
        if material == self.current.load().material {
            return Ok(self.current());
        }
        let snapshot = Arc::new(TlsSnapshot::build(material)?);
        self.current.store(snapshot.clone());
        self.changed.send_replace(snapshot.clone());
        tracing::info!(reason, crl_number = ?snapshot.crl.as_ref().map(|c| c.number), "TLS configuration reloaded");
        Ok(snapshot)
    }

    /// Installs a CRL fetched from the CA pool and rebuilds with it.
    pub(crate) fn install_crl(&self, pem: Vec<u8>) -> Result<Arc<TlsSnapshot>, TlsError> {
        let previous = self.pulled_crl.lock().map(|mut slot| slot.replace(pem)).unwrap_or(None);
        let result = self.rebuild("CRL pulled from the CA");
        if result.is_err() {
            if let Ok(mut slot) = self.pulled_crl.lock() {
                *slot = previous;
            }
        }
        result
    }

    /// Polls the files every `interval` and rebuilds on change, until `shutdown` resolves.
    pub(crate) async fn watch_files(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut stamps = self.stamps();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let now = self.stamps();
            if now == stamps {
                continue;
            }
            // A half-written file fails here and is retried when the writer touches it again.
            if let Err(e) = self.rebuild("a TLS file changed") {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous configuration");
            }
            stamps = now;
        }
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        let f = &self.files;
        [Some(&f.cert), Some(&f.key), Some(&f.client_ca), f.crl.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| stamp(p))
            .collect()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}
