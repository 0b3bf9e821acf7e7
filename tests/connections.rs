//! Idle and flooding connections, over real sockets: silent peers and
//! peers that stop after the HTTP/2 preface are closed within the
//! handshake and idle timeouts; connections over the caps (overall and
//! per peer) are refused at once while established clients keep being
//! served; and the cap stays below the open-file limit, so a flood larger
//! than that limit neither exhausts descriptors nor stops the server.

#![allow(clippy::unwrap_used)]
mod common;

use std::time::Duration;

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use strongbox::server::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: what a client sends right after the preface.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Raises this process's soft open-file limit to its hard limit, for
/// tests that open hundreds of sockets.
fn raise_own_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let _ = setrlimit(Resource::Nofile, lim);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Connects to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// How long until the server closes `s` (EOF or reset), reading and
/// dropping whatever it sends; `None` if still open after `within`.
async fn closed_after(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + within, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

async fn wait_open(server: &TestServer, want: usize) {
    let gauge = server.server.as_ref().unwrap().connections.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge.open() != want {
        assert!(
            Instant::now() < deadline,
            "{} connections open, want {want}",
            gauge.open()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list_tenants(c: &Client) -> Result<(), tonic::Status> {
    c.tenants()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_but_live_clients_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.connections = ConnectionLimits {
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start_with(dir, config).await;
    let addr = server.server.as_ref().unwrap().addr;

    // A real client, connected before the others and then idle for twice
    // the idle timeout: it answers the server's pings, so it stays.
    let live = server.operator().await;
    list_tenants(&live).await.unwrap();
    wait_open(&server, 1).await;

    let mut silent = connect_from([127, 0, 0, 1], addr).await;
    let mut preface_only = connect_from([127, 0, 0, 1], addr).await;
    preface_only.write_all(PREFACE).await.unwrap();
    let mut handshake_then_silent = connect_from([127, 0, 0, 1], addr).await;
    handshake_then_silent.write_all(PREFACE).await.unwrap();
    handshake_then_silent
        .write_all(EMPTY_SETTINGS)
        .await
        .unwrap();
    wait_open(&server, 4).await;

    let (a, b, c) = tokio::join!(
        closed_after(&mut silent, Duration::from_secs(10)),
        closed_after(&mut preface_only, Duration::from_secs(10)),
        closed_after(&mut handshake_then_silent, Duration::from_secs(10)),
    );
    let a = a.expect("a silent connection is closed");
    assert!(
        a >= Duration::from_millis(900) && a < Duration::from_secs(4),
        "silent connection closed after {a:?}, handshake timeout 1s"
    );
    let b = b.expect("a connection that sent only the preface is closed");
    assert!(
        b < Duration::from_secs(6),
        "preface-only closed after {b:?}"
    );
    let c = c.expect("an HTTP/2 connection that never answers a ping is closed");
    assert!(
        c < Duration::from_secs(6),
        "silent HTTP/2 closed after {c:?}"
    );
    wait_open(&server, 1).await;

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        server.server.as_ref().unwrap().connections.open(),
        1,
        "the live client's connection is kept through two idle timeouts"
    );
    list_tenants(&live).await.unwrap();
    wait_open(&server, 1).await;
}

#[tokio::test]
async fn connections_over_the_caps_are_refused_and_established_clients_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.connections = ConnectionLimits {
        max_connections: Some(12),
        max_per_peer: 8,
        // Long, so a close within a second is a refusal, not a timeout.
        handshake_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let server = TestServer::start_with(dir, config).await;
    let addr = server.server.as_ref().unwrap().addr;
    let established = server.operator().await;
    list_tenants(&established).await.unwrap();
    wait_open(&server, 1).await;

    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    wait_open(&server, 8).await;
    let mut over_peer = connect_from([127, 0, 0, 1], addr).await;
    assert!(
        closed_after(&mut over_peer, Duration::from_secs(2))
            .await
            .is_some(),
        "a ninth connection from one peer is refused at once"
    );
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 2], addr).await);
    }
    wait_open(&server, 12).await;
    let mut over_all = connect_from([127, 0, 0, 3], addr).await;
    assert!(
        closed_after(&mut over_all, Duration::from_secs(2))
            .await
            .is_some(),
        "a connection over the overall cap is refused at once, whoever sends it"
    );
    let refused = match Client::connect(&server.endpoint, Some(&server.operator_key)).await {
        Err(_) => true,
        Ok(c) => list_tenants(&c).await.is_err(),
    };
    assert!(refused, "a new client is refused while the caps are full");
    for _ in 0..20 {
        list_tenants(&established).await.unwrap();
    }
    assert_eq!(server.server.as_ref().unwrap().connections.open(), 12);

    drop(held);
    wait_open(&server, 1).await;
    let fresh = server.operator().await;
    list_tenants(&fresh).await.unwrap();
}

/// The binary under an open-file limit of 256, flooded with 600 silent
/// connections: it refuses beyond its derived cap instead of running out
/// of descriptors, keeps serving the client it has, closes the flood at
/// the handshake timeout, and then takes new clients.
#[tokio::test]
async fn a_flood_beyond_the_fd_limit_is_refused_below_it() {
    let own = raise_own_fd_limit();
    assert!(own >= 1024, "this test needs 1024 descriptors, has {own}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let conf = dir.path().join("strongbox.toml");
    std::fs::write(&conf, "handshake_timeout = \"2s\"\n").unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--config".as_ref(),
        conf.as_os_str(),
    ];
    let mut serve = Serve::start_with_fd_limit(&args, dir.path(), 256).unwrap();
    let addr: std::net::SocketAddr = serve
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let op = serve.operator(&data).await;
    let admin = tenant_with_admin(&op, "acme").await;
    let admin = op.as_key(&admin).unwrap();
    let key = new_principal(&admin, "acme", "app", &["writer", "reader"]).await;
    let writer = op.as_key(&key).unwrap();
    put_ok(&writer, "acme", "s1", "c", "k0", b"before").await;

    let mut flood = Vec::new();
    for _ in 0..600 {
        flood.push(connect_from([127, 0, 0, 1], addr).await);
    }
    for i in 0..20 {
        put_ok(&writer, "acme", "s1", "c", &format!("k{i}"), b"during").await;
    }
    assert!(
        serve.wait_for("refusing connections over the caps", Duration::from_secs(5)),
        "the refusals are logged"
    );
    let mut closed = 0;
    for s in flood.iter_mut() {
        if closed_after(s, Duration::from_secs(8)).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(closed, 600, "every flood connection is closed");
    let fresh = serve.operator(&data).await;
    list_tenants(&fresh).await.unwrap();
    assert_eq!(
        get_value(&writer, "acme", "s1", "c", "k19").await.unwrap(),
        b"during"
    );
    assert!(
        !serve.wait_for("accept failed", Duration::from_millis(100)),
        "the server never ran out of descriptors"
    );
    serve.kill();
}
