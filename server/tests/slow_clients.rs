//! Slow clients against the real server: a client that trickles its request headers
//! (slowloris) is cut off at the header deadline, and others are served meanwhile.

mod common;

use common::{free_port, Server};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

#[tokio::test]
async fn a_slowloris_client_is_cut_off() {
    if common::skip_on_postgres(
        "the HTTP layer's header deadline; the /healthz database ping at its end is how \
         every test's server start is awaited",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[("NIXDECK_HEADER_TIMEOUT_S", "2")],
    )
    .await;
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header line every 500 ms, never the blank line that ends the head: without a
    // header deadline this connection would stay open for as long as the client likes.
    let cut_off = loop {
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break true;
        }
        let mut buf = [0u8; 512];
        match timeout(Duration::from_millis(500), slow.read(&mut buf)).await {
            // The server closed (possibly after a 408 head).
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        // Meanwhile others are served.
        let health = reqwest::get(server.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
    };
    assert!(cut_off, "the slow client was still connected after 30 s");
    println!("slowloris cut off after {:?}", started.elapsed());
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}
