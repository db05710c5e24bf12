//! The TLS front reloads its certificate without dropping live connections, and keeps the old
//! configuration when the new files are bad.

use std::time::Duration;

use pki::KeyAlgorithm;
use testkit::{
    fixture::{CaFixture, Crossbar, LB_NAME},
    tls::{exchange, keepalive_get, TlsClient},
    wait,
};

use super::{bin, serial_of};

fn server_cert_serial(client: &TlsClient, port: u16) -> Vec<u8> {
    let stream = client.connect(port).unwrap();
    let der = stream.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    pki::describe::certificate(&der).unwrap().cert.unwrap().serial_bytes
}

#[test]
fn certificate_reload_keeps_live_connections_and_refuses_bad_files() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("true", ""));
    let port = cb.lb_port();
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let mut live = client.connect(port).unwrap();
    assert_eq!(
        exchange(&mut live, &keepalive_get("/puppet-ca/v1/certificate/ca")).unwrap().status,
        200
    );
    let old_serial = serial_of(&fx.cert(LB_NAME));
    assert_eq!(server_cert_serial(&client, port), old_serial);

    // Re-issue the LB certificate in place (the CA refuses a second cert for a name, so move
    // the old one aside first, as an operator renewing it would).
    std::fs::remove_file(fx.cadir.join(format!("signed/{LB_NAME}.pem"))).unwrap();
    let alt = vec![pki::AltName::Dns("localhost".into())];
    fx.issue(LB_NAME, alt, true);
    let new_serial = serial_of(&fx.cert(LB_NAME));
    assert_ne!(new_serial, old_serial);
    wait::until_true("new connections to get the new certificate", Duration::from_secs(20), || {
        server_cert_serial(&client, port) == new_serial
    });
    assert_eq!(
        exchange(&mut live, &keepalive_get("/puppet-ca/v1/certificate/ca")).unwrap().status,
        200,
        "the old connection still works"
    );

    // A broken certificate file is refused and the last good configuration stays.
    std::fs::write(
        fx.cert(LB_NAME),
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    wait::until_true("the bad reload to be logged", Duration::from_secs(20), || {
        cb.child.stderr().contains("TLS reload failed; keeping the previous configuration")
    });
    assert_eq!(server_cert_serial(&client, port), new_serial);
    assert_eq!(
        client.handshake_and_request(port, "/puppet-ca/v1/certificate/ca").unwrap().status,
        200
    );
}
