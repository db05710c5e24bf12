//! CA state under stress: `kill -9` in the middle of a signing burst, and two CA processes
//! sharing one directory (the seed's CA pair on shared storage).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use pki::KeyAlgorithm;
use testkit::{
    fixture::{csr_pem, http, CaFixture, Crossbar},
    wait,
};

use super::{bin, openssl_verify};

fn ca_only_config(fx: &CaFixture) -> String {
    format!("[ca]\nlisten = \"127.0.0.1:0\"\ncadir = \"{}\"\nautosign = true\n", fx.cadir.display())
}

/// Submits CSRs for `names` to the CA at `addr` from `threads` threads; counts 200s.
fn submit_all(
    addr: SocketAddr,
    names: Vec<String>,
    threads: usize,
    ok: Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    let csrs: Vec<(String, String)> = names.into_iter().map(|n| (csr_pem(&n), n)).collect();
    let chunks: Vec<Vec<(String, String)>> =
        csrs.chunks(csrs.len().div_ceil(threads)).map(<[_]>::to_vec).collect();
    chunks
        .into_iter()
        .map(|chunk| {
            let ok = ok.clone();
            std::thread::spawn(move || {
                for (csr, name) in chunk {
                    let path = format!("/puppet-ca/v1/certificate_request/{name}");
                    if let Ok((200, _)) = http(addr, "PUT", &path, csr.as_bytes()) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// Every signed certificate has a distinct serial, each is in the inventory once, the serial
/// file is ahead of all of them, and OpenSSL verifies every one.
fn assert_consistent(fx: &CaFixture) -> usize {
    let mut serials = BTreeSet::new();
    let mut count = 0;
    // Only `*.pem` files are certificates; an interrupted signing can leave a temp file that
    // the store ignores and the next start removes.
    let signed = std::fs::read_dir(fx.cadir.join("signed")).unwrap().flatten();
    for entry in signed.filter(|e| e.path().extension().is_some_and(|x| x == "pem")) {
        let serial = super::serial_of(&entry.path());
        assert!(
            serials.insert(serial.clone()),
            "serial {serial:?} used twice ({})",
            entry.path().display()
        );
        let (ok, text) = openssl_verify(&fx.ca_bundle(), &fx.crl(), &entry.path());
        assert!(ok, "{}: {text}", entry.path().display());
        count += 1;
    }
    let inventory = std::fs::read_to_string(fx.cadir.join("inventory.txt")).unwrap();
    let listed: Vec<u128> = pki::inventory::parse(&inventory).map(|e| e.serial.value()).collect();
    let unique: BTreeSet<u128> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "inventory repeats a serial");
    let next = pki::Serial::parse_file(&std::fs::read_to_string(fx.cadir.join("serial")).unwrap())
        .unwrap()
        .value();
    for serial in &serials {
        let value = pki::Serial::from_be_bytes(serial).unwrap().value();
        assert!(unique.contains(&value), "serial {value} is missing from the inventory");
        assert!(value < next, "serial file {next} is not ahead of {value}");
    }
    count
}

#[test]
fn kill_9_during_a_signing_burst_leaves_a_servable_state() {
    let fx = CaFixture::new(KeyAlgorithm::Rsa2048);
    let mut cb = Crossbar::start(bin(), fx.dir(), "ca-before", &ca_only_config(&fx));
    let names: Vec<String> = (0..400).map(|i| format!("burst{i}.example.com")).collect();
    let ok = Arc::new(AtomicUsize::new(0));
    let workers = submit_all(cb.ca.unwrap(), names.clone(), 8, ok.clone());
    wait::until_true("some signings to complete", Duration::from_secs(60), || {
        ok.load(Ordering::Relaxed) >= 25
    });
    cb.child.kill();
    for worker in workers {
        worker.join().unwrap();
    }
    let signed_before_restart = assert_consistent(&fx);
    assert!(
        signed_before_restart >= 25 && signed_before_restart < names.len(),
        "the kill landed mid-burst ({signed_before_restart} signed)"
    );

    let cb = Crossbar::start(bin(), fx.dir(), "ca-after", &ca_only_config(&fx));
    let addr = cb.ca.unwrap();
    let debris = std::fs::read_dir(fx.cadir.join("signed")).unwrap().flatten();
    let debris: Vec<_> =
        debris.filter(|e| e.file_name().to_string_lossy().starts_with(".crossbar-tmp")).collect();
    assert!(debris.is_empty(), "the restart removes interrupted writes: {debris:?}");
    for name in names.iter().filter(|n| fx.cadir.join(format!("signed/{n}.pem")).exists()) {
        let (status, body) =
            http(addr, "GET", &format!("/puppet-ca/v1/certificate/{name}"), b"").unwrap();
        assert_eq!(status, 200, "{name}");
        assert!(String::from_utf8_lossy(&body).contains("BEGIN CERTIFICATE"));
    }
    // Requests that were pending or lost are submitted again; all of them get signed now.
    let remaining: Vec<String> = names
        .iter()
        .filter(|n| !fx.cadir.join(format!("signed/{n}.pem")).exists())
        .cloned()
        .collect();
    let resubmitted = Arc::new(AtomicUsize::new(0));
    for worker in submit_all(addr, remaining, 4, resubmitted) {
        worker.join().unwrap();
    }
    let pending: Vec<String> = std::fs::read_dir(fx.cadir.join("requests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for file in pending {
        let name = file.trim_end_matches(".pem");
        let (status, _) =
            http(addr, "GET", &format!("/puppet-ca/v1/certificate/{name}"), b"").unwrap();
        assert_eq!(status, 404, "a pending request has no certificate yet");
    }
    let total = assert_consistent(&fx);
    assert!(total > signed_before_restart);
}

#[test]
fn two_ca_processes_on_one_directory_never_share_a_serial() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let first = Crossbar::start(bin(), fx.dir(), "ca-1", &ca_only_config(&fx));
    let second = Crossbar::start(bin(), fx.dir(), "ca-2", &ca_only_config(&fx));
    let ok = Arc::new(AtomicUsize::new(0));
    let names =
        |prefix: &str| (0..60).map(|i| format!("{prefix}{i}.example.com")).collect::<Vec<_>>();
    let mut workers = submit_all(first.ca.unwrap(), names("one"), 3, ok.clone());
    workers.extend(submit_all(second.ca.unwrap(), names("two"), 3, ok.clone()));
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::Relaxed), 120);
    assert_eq!(
        assert_consistent(&fx),
        120 + 2,
        "every request signed (plus the fixture's two certs)"
    );
}
