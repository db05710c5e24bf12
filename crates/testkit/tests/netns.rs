//! The namespace builder itself: hosts reach each other on the bridge and nothing else, a cut
//! host is unreachable until restored, and dropping the network — or a Ctrl-C of the process
//! that made it — removes every namespace.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
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

/// Set for the child process of `a_ctrl_c_tears_the_hosts_down`.
const HOLDER: &str = "XB_NETNS_HOLDER";

/// Not a test of its own: the process `a_ctrl_c_tears_the_hosts_down` interrupts (this test
/// binary, started again with `HOLDER` set). Makes a topology and holds it until a signal
/// ends the process; without `HOLDER` it returns at once.
#[test]
fn holds_a_topology_until_interrupted() {
    if std::env::var_os(HOLDER).is_none() {
        return;
    }
    let net = Network::new("hold", &[("h", 1)]).expect("network");
    println!("ready {}", net.ns("h"));
    std::io::stdout().flush().expect("stdout");
    loop {
        std::thread::park();
    }
}

#[test]
fn a_ctrl_c_tears_the_hosts_down() {
    assert!(Network::available(), "the tests run as root: ip netns must work");
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "holds_a_topology_until_interrupted", "--nocapture", "--test-threads=1"])
        .env(HOLDER, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let ns = stdout
        .lines()
        .map_while(Result::ok)
        // libtest prints the test's name first, on the same line.
        .find_map(|line| line.split_once("ready ").map(|(_, ns)| ns.trim().to_owned()))
        .expect("the holder made its hosts");
    assert!(namespaces().contains(&ns));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(sent.expect("kill").success());
    let status =
        testkit::wait::until("the holder to exit after SIGINT", Duration::from_secs(20), || {
            child.try_wait().expect("wait")
        });
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    assert_eq!(status.code(), Some(130), "torn down, then exit 130 (not killed): {stderr}");
    assert!(!namespaces().contains(&ns), "a Ctrl-C removes the namespaces: {stderr}");
}
