//! The PostgreSQL store against real PostgreSQL clusters (each test starts its own): several
//! CA nodes signing and revoking at once, the database stopping and failing over to a
//! promoted replica, the schema's guards, the audit trail, and moving a puppetserver CA in and
//! out.

use std::{
    collections::{BTreeSet, HashSet},
    path::Path,
    sync::{Arc, Barrier},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use ca::{
    api::{self, AccessPolicy, ApiState},
    audit::Actor,
    autosign::Autosign,
    db::{DbSettings, PgStore},
    error::CaError,
    fs::FsStore,
    service::{CaService, CaSettings},
    setup,
    store::StoreError,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use pki::{crl::CrlInfo, Certname, KeyAlgorithm};
use testkit::postgres::Postgres;
use tower::ServiceExt;

fn name(text: &str) -> Certname {
    Certname::parse(text).expect("valid certname")
}

fn settings(url: &str, node: &str) -> DbSettings {
    DbSettings {
        url: url.to_owned(),
        pool_size: 4,
        timeout: Duration::from_secs(5),
        outage_wait: Duration::ZERO,
        tls_roots: None,
        password_file: None,
        node: node.to_owned(),
    }
}

/// A new CA in the database, with its key in `<root>/a`; returns node "a".
fn setup_ca(url: &str, root: &Path) -> CaService {
    let store = PgStore::setup(
        &settings(url, "a"),
        &root.join("a"),
        "puppetlb.example.com",
        KeyAlgorithm::EcP256,
        pki::issue::DEFAULT_CA_TTL,
    )
    .expect("setup");
    CaService::open(Arc::new(store), CaSettings::default()).expect("service")
}

/// Another node of the same CA: a copy of the CA's certificate and key in `<root>/<node>`, and
/// the database password in a file rather than in the URL.
fn join(url: &str, root: &Path, node: &str) -> CaService {
    let dir = root.join(node);
    std::fs::create_dir_all(&dir).expect("cadir");
    for file in ["ca_crt.pem", "ca_key.pem"] {
        std::fs::copy(root.join("a").join(file), dir.join(file)).expect("copy");
    }
    let password = root.join(format!("{node}.password"));
    std::fs::write(&password, "crossbar\n").expect("password file");
    let mut settings = settings(&url.replace("crossbar:crossbar@", "crossbar@"), node);
    settings.password_file = Some(password);
    let store = PgStore::open(&settings, &dir).expect("open");
    CaService::open(Arc::new(store), CaSettings::default()).expect("service")
}

fn csr_pem(cn: &str) -> String {
    testkit::fixture::csr_pem(cn)
}

/// Submits and autosigns a CSR for `cn`, as an agent's PUT with autosign on.
fn autosign(node: &CaService, cn: &str) -> Result<pki::IssuedCert, CaError> {
    let pending = node.check_request(cn, csr_pem(cn).as_bytes())?;
    node.autosign(&pending)
}

fn crl_of(node: &CaService) -> CrlInfo {
    node.crl().expect("crl")
}

fn revoked_serials(crl: &CrlInfo) -> BTreeSet<Vec<u8>> {
    crl.revoked.iter().map(|e| e.serial.clone()).collect()
}

fn is_unavailable(e: &CaError) -> bool {
    matches!(e, CaError::Store(StoreError::Unavailable(_)))
}

#[test]
fn two_nodes_sign_at_once_without_a_shared_serial_or_a_double_certificate() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = Arc::new(setup_ca(&pg.url(), root.path()));
    let b = Arc::new(join(&pg.url(), root.path(), "b"));
    // 4 threads per node: 240 names of their own, and 40 names every thread submits at once.
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let node = if t % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                let mut lost = 0;
                for i in 0..30 {
                    let cn = format!("own-{t}-{i}.example.com");
                    won.push((autosign(&node, &cn).expect("own name"), cn));
                }
                for i in 0..40 {
                    let cn = format!("shared-{i}.example.com");
                    match autosign(&node, &cn) {
                        Ok(issued) => won.push((issued, cn)),
                        Err(CaError::Duplicate { .. })
                        | Err(CaError::Store(StoreError::Conflict { .. })) => lost += 1,
                        Err(e) => panic!("shared-{i}: {e}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let mut issued = Vec::new();
    let mut lost = 0;
    for handle in handles {
        let (won, l) = handle.join().expect("thread");
        issued.extend(won);
        lost += l;
    }
    assert_eq!(issued.len(), 240 + 40, "each shared name is signed exactly once");
    assert_eq!(lost, 40 * (threads - 1));
    let serials: HashSet<_> = issued.iter().map(|(i, _)| i.serial).collect();
    assert_eq!(serials.len(), issued.len(), "a serial was issued twice");
    assert_eq!(
        pg.psql("crossbar", "SELECT count(*), count(DISTINCT serial) FROM ca_cert"),
        "280|280"
    );
    assert_eq!(pg.psql("crossbar", "SELECT count(*) FROM ca_current"), "280");
    // Every certificate is served by both nodes, byte for byte.
    for (cert, cn) in &issued {
        for node in [&a, &b] {
            let served = node.store().certificate(&name(cn)).expect("read").expect("present");
            assert_eq!(served.bytes, cert.pem.as_bytes(), "{cn}");
        }
    }
}

#[test]
fn a_revocation_on_one_node_is_in_every_nodes_crl_when_the_call_returns() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = Arc::new(setup_ca(&pg.url(), root.path()));
    let b = Arc::new(join(&pg.url(), root.path(), "b"));
    let names: Vec<Certname> = (0..20).map(|i| name(&format!("agent{i}.example.com"))).collect();
    let mut serials = BTreeSet::new();
    for n in &names {
        serials.insert(autosign(&a, n.as_str()).expect("sign").serial.to_be_bytes());
    }
    // One revocation on b: a serves it at once (no cache to expire, no file to sync).
    let before = crl_of(&a).number;
    b.revoke(&names[..1], &Actor::Admin("admin".into())).expect("revoke");
    let crl = crl_of(&a);
    assert!(crl.number > before, "the CRL number grew: {before} -> {}", crl.number);
    assert_eq!(revoked_serials(&crl).len(), 1);
    // The rest revoked one by one on both nodes at once: no revocation is lost to a race.
    let handles: Vec<_> = names[1..]
        .chunks(1)
        .enumerate()
        .map(|(i, chunk)| {
            let node = if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
            let chunk = chunk.to_vec();
            std::thread::spawn(move || node.revoke(&chunk, &Actor::Admin("admin".into())))
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread").expect("revoke");
    }
    for node in [&a, &b] {
        assert_eq!(revoked_serials(&crl_of(node)), serials, "every revocation is in the CRL");
    }
    // Every CRL ever published has its own number, and they grow with time.
    assert_eq!(pg.psql("crossbar", "SELECT count(*) = count(DISTINCT number) FROM ca_crl"), "t");
    assert_eq!(
        pg.psql(
            "crossbar",
            "SELECT bool_and(n > p) FROM (SELECT number n, lag(number) OVER (ORDER BY built_at, number) p FROM ca_crl) s WHERE p IS NOT NULL"
        ),
        "t"
    );
    assert_eq!(
        pg.psql("crossbar", "SELECT count(*) FROM ca_cert WHERE revoked_at IS NOT NULL"),
        "20"
    );
}

#[test]
fn a_stopped_database_answers_unavailable_and_service_resumes_without_a_restart() {
    let mut pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = setup_ca(&pg.url(), root.path());
    let signed = autosign(&a, "before.example.com").expect("sign");
    let crl_before = a.store().crl_chain().expect("crl").bytes;
    // A node that has served nothing yet still has the CRL to serve.
    let idle = join(&pg.url(), root.path(), "idle");
    pg.stop();
    assert_eq!(idle.store().crl_chain().expect("the CRL, from memory").bytes, crl_before);
    // Writes fail as "unavailable" (503 + Retry-After at the API), quickly.
    let started = std::time::Instant::now();
    let error = autosign(&a, "during.example.com").expect_err("no database");
    assert!(is_unavailable(&error), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let error = a.revoke(&[name("before.example.com")], &Actor::Ca).expect_err("no database");
    assert!(is_unavailable(&error), "{error}");
    // What agents need to keep running is served from memory: the CA certificate, the last
    // CRL, and the certificates this node has seen.
    assert!(a.store().ca_bundle().is_ok());
    assert_eq!(a.store().crl_chain().expect("cached CRL").bytes, crl_before);
    let cert =
        a.store().certificate(&name("before.example.com")).expect("cached").expect("present");
    assert_eq!(cert.bytes, signed.pem.as_bytes());
    // A certificate this node has not seen cannot be answered for either way.
    let error = a.store().certificate(&name("unknown.example.com")).expect_err("no database");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    pg.restart();
    let after = testkit::wait::until("the node to sign again", Duration::from_secs(30), || {
        autosign(&a, "after.example.com").ok()
    });
    assert_ne!(after.serial, signed.serial);
    a.revoke(&[name("before.example.com")], &Actor::Ca).expect("revoke after the outage");
    assert_eq!(revoked_serials(&crl_of(&a)), BTreeSet::from([signed.serial.to_be_bytes()]));
}

#[test]
fn a_promoted_replica_takes_over_with_everything_committed_before() {
    let mut primary = Postgres::start("primary");
    let replica = primary.replica("replica");
    let root = tempfile::tempdir().expect("tempdir");
    // The URL names both servers; only the one that accepts writes is used.
    let url = format!(
        "postgresql://crossbar:crossbar@127.0.0.1:{},127.0.0.1:{}/crossbar?target_session_attrs=read-write",
        primary.port, replica.port
    );
    let a = setup_ca(&url, root.path());
    let first = autosign(&a, "first.example.com").expect("sign");
    a.revoke(&[name("first.example.com")], &Actor::Ca).expect("revoke");
    let number_before = crl_of(&a).number;
    // Synchronous in effect: wait until the replica has replayed everything.
    let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
    testkit::wait::until_true("the replica to catch up", Duration::from_secs(30), || {
        replica.psql("postgres", &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) == "t"
    });
    primary.kill();
    let error = autosign(&a, "between.example.com").expect_err("no primary");
    assert!(is_unavailable(&error), "{error}");
    replica.promote();
    let second = testkit::wait::until(
        "the node to sign on the new primary",
        Duration::from_secs(30),
        || autosign(&a, "second.example.com").ok(),
    );
    assert_ne!(second.serial, first.serial);
    let served = a.store().certificate(&name("first.example.com")).expect("read").expect("present");
    assert_eq!(served.bytes, first.pem.as_bytes());
    a.revoke(&[name("second.example.com")], &Actor::Ca).expect("revoke on the new primary");
    let crl = crl_of(&a);
    assert!(crl.number > number_before);
    assert_eq!(revoked_serials(&crl).len(), 2, "the revocation made before the failover is kept");
}

#[test]
fn every_write_lands_in_the_audit_trail_with_its_node_and_actor() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = setup_ca(&pg.url(), root.path());
    let b = join(&pg.url(), root.path(), "b");
    autosign(&a, "web1.example.com").expect("sign");
    let pending =
        b.check_request("web2.example.com", csr_pem("web2.example.com").as_bytes()).expect("check");
    b.save_request(&pending).expect("save");
    b.sign(&name("web2.example.com"), None, &Actor::Admin("ops.example.com".into())).expect("sign");
    a.revoke(&[name("web1.example.com")], &Actor::Admin("ops.example.com".into())).expect("revoke");
    let rows = pg.psql(
        "crossbar",
        "SELECT node, actor, action, certname, serial IS NOT NULL FROM ca_audit ORDER BY id",
    );
    let rows: Vec<&str> = rows.lines().collect();
    assert!(rows.contains(&"a|autosign|sign|web1.example.com|t"), "{rows:#?}");
    assert!(rows.contains(&"b|admin ops.example.com|sign|web2.example.com|t"), "{rows:#?}");
    assert!(rows.contains(&"a|admin ops.example.com|revoke|web1.example.com|t"), "{rows:#?}");
}

#[test]
fn the_schema_refuses_another_ca_a_newer_crossbar_and_a_second_setup() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    // An empty database holds no CA: opening says how to make one.
    let other = tempfile::tempdir().expect("tempdir");
    setup::setup(other.path(), "other", KeyAlgorithm::EcP256, pki::issue::DEFAULT_CA_TTL)
        .expect("fs ca");
    let error = PgStore::open(&settings(&url, "x"), other.path()).err().expect("no CA yet");
    assert!(error.to_string().contains("holds no CA"), "{error}");
    // Two setups at once: exactly one makes the CA.
    let handles = ["a", "b"].map(|n| {
        let url = url.clone();
        let dir = root.path().join(format!("setup-{n}"));
        std::thread::spawn(move || {
            PgStore::setup(
                &settings(&url, n),
                &dir,
                "puppetlb.example.com",
                KeyAlgorithm::EcP256,
                pki::issue::DEFAULT_CA_TTL,
            )
            .map(drop)
        })
    });
    let results = handles.map(|h| h.join().expect("thread"));
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{:?}",
        results.iter().map(|r| r.as_ref().err().map(ToString::to_string)).collect::<Vec<_>>()
    );
    // A node with another CA's key is refused.
    let error = PgStore::open(&settings(&url, "x"), other.path()).err().expect("another CA");
    assert!(error.to_string().contains("holds another CA"), "{error}");
    // A schema from a newer crossbar is refused, not guessed at.
    pg.psql("crossbar", "INSERT INTO crossbar_schema (version) VALUES (99)");
    let winner = if results[0].is_ok() { "setup-a" } else { "setup-b" };
    let error =
        PgStore::open(&settings(&url, "x"), &root.path().join(winner)).err().expect("newer schema");
    assert!(error.to_string().contains("newer than this crossbar"), "{error}");
}

#[test]
fn a_puppetserver_ca_moves_in_and_back_out_with_its_serials_and_revocations() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    // A CA directory in puppetserver's layout, with history: signed, revoked, pending.
    let fsdir = root.path().join("puppetserver-ca");
    setup::setup(&fsdir, "puppetlb.example.com", KeyAlgorithm::EcP256, pki::issue::DEFAULT_CA_TTL)
        .expect("fs ca");
    let (fs_store, _) = FsStore::open(&fsdir).expect("open");
    let old = CaService::open(Arc::new(fs_store), CaSettings::default()).expect("service");
    for n in ["keep.example.com", "gone.example.com"] {
        autosign(&old, n).expect("sign");
    }
    old.revoke(&[name("gone.example.com")], &Actor::Ca).expect("revoke");
    let pending = old
        .check_request("wait.example.com", csr_pem("wait.example.com").as_bytes())
        .expect("check");
    old.save_request(&pending).expect("save");
    let old_crl = crl_of(&old);
    let before = std::fs::read(fsdir.join("inventory.txt")).expect("inventory");
    drop(old);

    let cadir = root.path().join("db-node");
    let store = PgStore::import(&settings(&pg.url(), "a"), &cadir, &fsdir).expect("import");
    let node = CaService::open(Arc::new(store), CaSettings::default()).expect("service");
    assert_eq!(
        std::fs::read(fsdir.join("inventory.txt")).expect("inventory"),
        before,
        "import only reads"
    );
    assert_eq!(revoked_serials(&crl_of(&node)), revoked_serials(&old_crl));
    let keep = node.status(&name("keep.example.com")).expect("status").expect("present");
    assert_eq!(keep.state.as_str(), "signed");
    let wait = node.status(&name("wait.example.com")).expect("status").expect("present");
    assert_eq!(wait.state.as_str(), "requested");
    // Signing in the database: a random serial, far above puppetserver's sequential ones.
    let fresh = autosign(&node, "fresh.example.com").expect("sign");
    assert!(fresh.serial.value() >= 1 << 126);
    node.revoke(&[name("keep.example.com")], &Actor::Ca).expect("revoke");

    let out = root.path().join("exported");
    PgStore::open(&settings(&pg.url(), "a"), &cadir).expect("open").export(&out).expect("export");
    let (exported, _) = FsStore::open(&out).expect("puppetserver's layout");
    let back = CaService::open(Arc::new(exported), CaSettings::default()).expect("service");
    assert_eq!(revoked_serials(&crl_of(&back)), revoked_serials(&crl_of(&node)));
    for n in ["keep.example.com", "fresh.example.com", "wait.example.com"] {
        let status = back.status(&name(n)).expect("status").expect("present");
        let before = node.status(&name(n)).expect("status").expect("present");
        assert_eq!(status.to_json(), before.to_json(), "{n}");
    }
    // The serial file continues puppetserver's sequence; the inventory has every certificate.
    assert_eq!(std::fs::read_to_string(out.join("serial")).expect("serial"), "0004");
    let inventory = std::fs::read_to_string(out.join("inventory.txt")).expect("inventory");
    let serials: Vec<u128> = pki::inventory::parse(&inventory).map(|e| e.serial.value()).collect();
    assert_eq!(serials.len(), 4, "{inventory}");
    assert!(serials.contains(&fresh.serial.value()));
    // And signing there continues from it.
    let next = autosign(&back, "next.example.com").expect("sign");
    assert_eq!(next.serial.value(), 4);
}

/// One anonymous GET to a node's HTTP API with `headers`; (status, headers, body).
async fn get(
    node: &Arc<CaService>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let access = AccessPolicy {
        proxy_secret: None,
        trusted_proxies: vec![],
        admin_certnames: Default::default(),
    };
    let state = Arc::new(ApiState::new(Arc::clone(node), Autosign::Off, access));
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 4000))));
    let response = api::router(state).oneshot(request).await.expect("response");
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.expect("body").to_bytes().to_vec())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_crl_requests_get_the_same_answer_from_every_node() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let (url, dir) = (pg.url(), root.path().to_owned());
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = setup_ca(&url, &dir);
        let b = join(&url, &dir, "b");
        for n in ["one.example.com", "two.example.com"] {
            autosign(&a, n).expect("sign");
        }
        (Arc::new(a), Arc::new(b))
    })
    .await
    .expect("setup");
    const CRL: &str = "/puppet-ca/v1/certificate_revocation_list/ca";
    let (status, first, body_a) = get(&a, CRL, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (etag, last_modified) =
        (header(&first, "etag").to_owned(), header(&first, "last-modified").to_owned());
    // Last-Modified is the CRL's own thisUpdate, so every node dates it alike.
    let der = pki::pemfile::blocks(&body_a, "X509 CRL").expect("pem").remove(0);
    let this_update = CrlInfo::from_der(&der).expect("crl").this_update;
    assert_eq!(last_modified, httpdate::fmt_http_date(this_update.into()));
    let (status, other, body_b) = get(&b, CRL, &[]).await;
    assert_eq!(
        (status, header(&other, "etag"), body_b),
        (StatusCode::OK, etag.as_str(), body_a.clone())
    );
    for validator in
        [("if-none-match", etag.as_str()), ("if-modified-since", last_modified.as_str())]
    {
        let (status, _, body) = get(&b, CRL, &[validator]).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0), "{validator:?}");
    }
    // Two revocations within a second: the dates may be equal, the tags never are, so a puller
    // that sends If-None-Match never misses the second one.
    let mut tags = vec![etag];
    for n in ["one.example.com", "two.example.com"] {
        let node = Arc::clone(&a);
        tokio::task::spawn_blocking(move || node.revoke(&[name(n)], &Actor::Ca))
            .await
            .expect("task")
            .expect("revoke");
        let previous = tags.last().expect("a tag").clone();
        let (status, answer, body) = get(&b, CRL, &[("if-none-match", previous.as_str())]).await;
        assert_eq!(status, StatusCode::OK, "{n}: a new CRL, whatever its date");
        let der = pki::pemfile::blocks(&body, "X509 CRL").expect("pem").remove(0);
        assert!(CrlInfo::from_der(&der).expect("crl").revoked.len() == tags.len());
        tags.push(header(&answer, "etag").to_owned());
    }
    assert_eq!(tags.iter().collect::<HashSet<_>>().len(), 3);
}

#[test]
fn pruning_drops_expired_certificates_from_the_crl_every_node_serves() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = setup_ca(&pg.url(), root.path());
    let b = join(&pg.url(), root.path(), "b");
    let admin = Actor::Admin("ops.example.com".into());
    for n in ["short.example.com", "long.example.com"] {
        let pending = a.check_request(n, csr_pem(n).as_bytes()).expect("check");
        a.save_request(&pending).expect("save");
    }
    let short =
        a.sign(&name("short.example.com"), Some(Duration::from_secs(1)), &admin).expect("sign");
    a.sign(&name("long.example.com"), None, &admin).expect("sign");
    a.revoke(&[name("short.example.com"), name("long.example.com")], &admin).expect("revoke");
    assert_eq!(b.prune_crl(&admin).expect("prune"), 0, "nothing has expired yet");
    testkit::wait::until_true("the short certificate to expire", Duration::from_secs(10), || {
        time::OffsetDateTime::now_utc() > short.validity.not_after
    });
    let before = crl_of(&a);
    assert_eq!(b.prune_crl(&admin).expect("prune"), 1);
    let after = crl_of(&a);
    assert!(after.number > before.number);
    assert_eq!(after.revoked.len(), 1);
    assert!(!after.is_revoked(&short.serial.to_be_bytes()), "the expired one is gone");
    assert_eq!(
        pg.psql(
            "crossbar",
            "SELECT count(*) FROM ca_audit WHERE action = 'crl-prune' AND node = 'b'"
        ),
        "1"
    );
}

#[test]
fn a_write_waits_out_a_short_outage_instead_of_answering_503() {
    let mut pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    setup_ca(&url, root.path());
    let dir = root.path().join("patient");
    std::fs::create_dir_all(&dir).expect("cadir");
    for file in ["ca_crt.pem", "ca_key.pem"] {
        std::fs::copy(root.path().join("a").join(file), dir.join(file)).expect("copy");
    }
    let mut patient = settings(&url, "patient");
    patient.outage_wait = Duration::from_secs(30);
    let node = CaService::open(
        Arc::new(PgStore::open(&patient, &dir).expect("open")),
        CaSettings::default(),
    )
    .expect("service");
    pg.stop();
    let started = std::time::Instant::now();
    let (restarted_tx, restarted_rx) = std::sync::mpsc::channel();
    let signing = std::thread::spawn(move || autosign(&node, "waited.example.com"));
    // The database comes back while the signing is waiting for it.
    std::thread::sleep(Duration::from_secs(2));
    pg.restart();
    restarted_tx.send(started.elapsed()).expect("send");
    let issued = signing.join().expect("thread").expect("signed once the database is back");
    let back_after = restarted_rx.recv().expect("restart time");
    assert!(started.elapsed() >= back_after, "it answered after the database returned");
    assert_eq!(
        pg.psql("crossbar", "SELECT count(*) FROM ca_cert WHERE certname = 'waited.example.com'"),
        "1"
    );
    assert!(issued.serial.is_random());
}

#[test]
fn a_renewal_on_one_node_is_served_by_every_node_and_a_revoked_certificate_is_not_renewed() {
    let pg = Postgres::start("pg");
    let root = tempfile::tempdir().expect("tempdir");
    let a = setup_ca(&pg.url(), root.path());
    let b = join(&pg.url(), root.path(), "b");
    let old = autosign(&a, "web1.example.com").expect("sign");
    // Node b renews what node a signed: a new serial, the old certificate left valid.
    let new = b.renew(&old.der).expect("renew on the other node");
    assert_ne!(new.serial, old.serial, "a new serial");
    let lifetime = new.validity.not_after - new.validity.not_before;
    assert!(lifetime.whole_days() >= 89 && lifetime.whole_days() <= 91, "{lifetime}");
    for node in [&a, &b] {
        let served = node.store().certificate(&name("web1.example.com")).expect("read");
        assert_eq!(served.expect("present").bytes, new.pem.as_bytes(), "the renewed one is served");
        assert!(!crl_of(node).is_revoked(&old.serial.to_be_bytes()), "the old one stays valid");
    }
    assert_eq!(
        pg.psql("crossbar", "SELECT count(*) FROM ca_cert WHERE certname = 'web1.example.com'"),
        "2"
    );
    let audit = pg.psql("crossbar", "SELECT node, actor, action FROM ca_audit ORDER BY id");
    assert!(audit.lines().any(|l| l == "b|agent web1.example.com|renew"), "{audit}");
    // Revoked through node a: node b refuses to renew it, and nothing is written.
    a.revoke(&[name("web1.example.com")], &Actor::Admin("ops.example.com".into())).expect("revoke");
    assert!(matches!(b.renew(&new.der), Err(CaError::RenewalInvalid)));
    assert_eq!(
        pg.psql("crossbar", "SELECT count(*) FROM ca_cert WHERE certname = 'web1.example.com'"),
        "2"
    );
}
