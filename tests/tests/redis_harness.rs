//! Tests for the `redis-server` harness ([`trellis_tests::redis::RedisServer`]).

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trellis_tests::redis::RedisServer;

/// Sends one inline command and returns the first reply line.
async fn command(port: u16, line: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("{line}\r\n").as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).trim_end().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_stops_and_restarts_on_the_same_port() -> anyhow::Result<()> {
    let (mut a, b) = tokio::try_join!(RedisServer::start(), RedisServer::start())?;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}/", a.port()));
    assert_eq!(command(a.port(), "SET k v").await?, "+OK");
    assert!(command(a.port(), "GET k").await?.starts_with("$1"));
    let port = a.port();
    a.stop();
    assert!(!a.is_running());
    assert!(command(port, "PING").await.is_err(), "still answering after stop");
    a.restart().await?;
    assert_eq!(a.port(), port);
    assert_eq!(command(port, "PING").await?, "+PONG");
    // Persistence is off: a restarted server is empty.
    assert_eq!(command(port, "EXISTS k").await?, ":0");
    Ok(())
}
