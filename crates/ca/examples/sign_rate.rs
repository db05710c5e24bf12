//! Measures how many CSRs the CA signs per second: the pure signing ceiling (`CaSigner::issue`
//! in memory) and the full service path (parse, duplicate check, save, policy, serial under the
//! lock, fsynced certificate and inventory) on a real directory.
//!
//! `cargo run --release -p ca --example sign_rate -- [csrs] [threads] [key]`
//! (defaults: 400 CSRs, 2 threads, rsa-4096).

use std::{sync::Arc, time::Instant};

use ca::{fs::FsStore, CaService, CaSettings};
use pki::{CertRequest, Certname, Csr, KeyAlgorithm, Serial, Validity};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let key: KeyAlgorithm = args.get(3).and_then(|a| a.parse().ok()).unwrap_or_default();

    let dir = tempfile::tempdir().expect("tempdir");
    ca::setup::setup(dir.path(), "bench.example.com", key, pki::issue::DEFAULT_CA_TTL)
        .expect("setup");
    let (store, _) = FsStore::open(dir.path()).expect("open");
    let service =
        Arc::new(CaService::open(Arc::new(store), CaSettings::default()).expect("service"));
    let csrs: Vec<(String, String)> = (0..count)
        .map(|i| {
            let name = format!("agent{i}.example.com");
            (csr_pem(&name), name)
        })
        .collect();

    let probe = Csr::from_pem(csrs[0].0.as_bytes()).expect("csr");
    let request = CertRequest::from_csr(Certname::parse(&csrs[0].1).expect("name"), &probe);
    let validity = Validity::puppet(time::OffsetDateTime::now_utc(), pki::issue::DEFAULT_CERT_TTL);
    let started = Instant::now();
    let per_thread = count / threads;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for i in 0..per_thread {
                    service
                        .signer()
                        .issue(&request, Serial::new(i as u64 + 10), validity)
                        .expect("issue");
                }
            });
        }
    });
    let ceiling = (per_thread * threads) as f64 / started.elapsed().as_secs_f64();

    let chunks: Vec<&[(String, String)]> = csrs.chunks(count.div_ceil(threads)).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for chunk in &chunks {
            let service = service.clone();
            s.spawn(move || {
                for (pem, name) in *chunk {
                    let pending = service.check_request(name, pem.as_bytes()).expect("check");
                    service.autosign(&pending).expect("sign");
                }
            });
        }
    });
    let full = count as f64 / started.elapsed().as_secs_f64();
    println!("CA key {key}, {threads} threads, {count} CSRs");
    println!("signing ceiling (in memory):          {ceiling:8.1} certs/s");
    println!(
        "full service (policy, serial, fsynced store): {full:8.1} certs/s ({:.0}% of the ceiling)",
        100.0 * full / ceiling
    );
}

fn csr_pem(cn: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}
