//! The namespace builder itself: hosts reach each other on the bridge and nothing else, a cut
//! host is unreachable until restored, and dropping the network removes every namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use testkit::netns::Network;

fn namespaces() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip").stdout,
    )
    .into_owned()
}

#[test]
fn hosts_talk_over_the_bridge_and_vanish_on_drop() {
    assert!(Network::available(), "the tests run as root: ip netns must work");
    let net = Network::new("t", &[("a", 1), ("b", 2)]).expect("network");
    let b = net.addr("b");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = net.run_in("b", move || {
        let listener = TcpListener::bind(SocketAddr::from((b, 7000))).expect("bind in b");
        ready_tx.send(()).expect("ready");
        let (mut stream, peer) = listener.accept().expect("accept");
        stream.write_all(b"hello").expect("write");
        peer
    });
    ready_rx.recv().expect("b listens");
    let a = net.addr("a");
    let reply = net
        .run_in("a", move || {
            let mut stream =
                TcpStream::connect_timeout(&SocketAddr::from((b, 7000)), Duration::from_secs(5))
                    .expect("connect");
            let mut text = String::new();
            stream.read_to_string(&mut text).expect("read");
            text
        })
        .join()
        .expect("client");
    assert_eq!(reply, "hello");
    assert_eq!(server.join().expect("server").ip(), a, "b saw a's own address");
    net.cut("b");
    let cut = net
        .run_in("a", move || {
            TcpStream::connect_timeout(&SocketAddr::from((b, 7001)), Duration::from_millis(500))
                .is_err()
        })
        .join()
        .expect("probe");
    assert!(cut, "a cut host does not answer");
    let ns = net.ns("a");
    assert!(namespaces().contains(&ns));
    drop(net);
    assert!(!namespaces().contains(&ns), "dropping the network removes its namespaces");
}
