//! The HTTP front in-process: started after `ferrymq_server::run`, answering over a real
//! socket, and ending with the broker's structured shutdown even with a keep-alive
//! connection open. (The API itself is covered end to end by `tests/http`.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUEST: &str = "Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n";

/// One request on `stream` (kept alive); returns (status, headers, body).
async fn request(stream: &mut TcpStream, head: &str, body: &str) -> (u16, String, String) {
    let req = format!(
        "{head}\r\nHost: test\r\nContent-Length: {}\r\n{GUEST}\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((headers, rest)) = text.split_once("\r\n\r\n") {
            let len = headers
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= len {
                let status = headers[9..12].parse().unwrap();
                return (status, headers.to_owned(), rest[..len].to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_shuts_down_with_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = ferrymq_server::Config {
        data_dir: dir.path().to_path_buf(),
        bind: "127.0.0.1".into(),
        amqp_port: 0,
        kafka_port: 0,
        http_port: 0,
        prometheus_port: 0,
        ..Default::default()
    };
    let mut running = ferrymq_server::run(config).await.unwrap();
    ferrymq_http::start(&mut running).await.unwrap();
    let addr = running.http_addr.expect("the http listener");
    assert!(running.https_addr.is_none(), "no certificate, no https");

    // No credentials: 401 with the challenge.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("www-authenticate: basic realm=\"rabbitmq management\""));

    // A keep-alive connection: declare, read back, then leave it open.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, _, _) = request(
        &mut s,
        "PUT /api/queues/%2F/it HTTP/1.1",
        "{\"durable\":\"true\"}",
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, body) = request(&mut s, "GET /api/queues//it HTTP/1.1", "").await;
    assert_eq!(status, 200);
    let q: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (q["name"].as_str(), q["messages"].as_u64()),
        (Some("it"), Some(0))
    );
    let (status, headers, _) = request(
        &mut s,
        "POST /api/bindings/%2F/e/amq.direct/q/it HTTP/1.1",
        "{\"routing_key\":\"rk\"}",
    )
    .await;
    assert_eq!(status, 201);
    assert!(headers
        .to_ascii_lowercase()
        .contains("location: /api/bindings/%2f/e/amq.direct/q/it/rk"));
    let (status, _, body) = request(&mut s, "PUT /api/queues/%2F/bad HTTP/1.1", "{nope").await;
    assert_eq!(status, 400);
    assert!(body.contains("bad_request"));

    // Shutdown ends the HTTP front too, with the connection still open.
    tokio::time::timeout(Duration::from_secs(20), running.shutdown())
        .await
        .expect("shutdown completes");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the open connection is closed at shutdown");
}
