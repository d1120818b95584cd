//! Shared helpers for the integration tests: an in-process broker on an
//! ephemeral port and small lapin conveniences.
#![allow(dead_code)]

pub mod process;

use ferrymq::config::Config;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A broker started by a test; dropped with the test's runtime.
pub struct TestBroker {
    /// The running server.
    pub running: ferrymq::Running,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts a broker on 127.0.0.1 with an ephemeral port.
pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

/// Starts a broker after letting the test adjust its configuration.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let dir = std::env::temp_dir().join(format!(
        "ferrymq-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut cfg = Config {
        amqp_bind: "127.0.0.1:0".into(),
        http_bind: "127.0.0.1:0".into(),
        data_dir: dir.clone(),
        ..Config::default()
    };
    adjust(&mut cfg);
    let running = ferrymq::start(&cfg).await.expect("broker starts");
    let port = running.amqp_addrs[0].port();
    TestBroker {
        running,
        port,
        _dir: tempdir::Dir(dir),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ N.fetch_add(1, Ordering::Relaxed)
}

impl TestBroker {
    /// Port of the management API.
    pub fn http_port(&self) -> u16 {
        self.running.http_addrs[0].port()
    }

    /// A management API request as guest; returns the status and the JSON body (Null if empty).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        http(
            self.http_port(),
            method,
            path,
            body,
            Some(("guest", "guest")),
        )
        .await
    }

    /// amqp URI for `user:pass` on vhost `/`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A new connection as guest.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("connect")
    }

    /// A new connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = c.create_channel().await.expect("channel");
        (c, ch)
    }
}

/// The AMQP reply code and text of a lapin error, if the broker sent one.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some((p.get_id(), p.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `r` failed with reply `code`; returns the reply text.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, lapin::Error>, code: u16) -> String {
    match r {
        Ok(v) => panic!("expected error {code}, got Ok({v:?})"),
        Err(e) => match amqp_error(&e) {
            Some((c, text)) => {
                assert_eq!(c, code, "unexpected reply: {text}");
                text
            }
            None => panic!("expected AMQP error {code}, got {e:?}"),
        },
    }
}

/// Declares a non-durable queue with arguments.
pub async fn declare(ch: &Channel, name: &str, args: FieldTable) -> lapin::Queue {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .expect("queue.declare")
}

/// Passive `queue.declare`: the queue's state, or the broker's error.
pub async fn passive(ch: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, FieldTable::default())
        .await
}

/// Declares a durable queue without arguments.
pub async fn declare_durable(ch: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, FieldTable::default())
        .await
}

/// Publishes to `exchange` with `rk` and plain properties.
pub async fn publish(ch: &Channel, exchange: &str, rk: &str, body: &[u8]) {
    publish_props(ch, exchange, rk, body, BasicProperties::default()).await
}

/// Publishes with properties.
pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
    props: BasicProperties,
) {
    ch.basic_publish(
        exchange.into(),
        rk.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("basic.publish");
}

/// basic.get with auto-ack; returns the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .map(|m| m.delivery.data)
}

/// Drains `queue` with basic.get (auto-ack) and returns the bodies as strings.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(b) = get_body(ch, queue).await {
        out.push(String::from_utf8(b).unwrap());
    }
    out
}

/// Waits for the next delivery of a consumer, with a timeout.
pub async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery within 5 s")
        .expect("consumer stream open")
        .expect("delivery ok")
}

/// Starts an auto-ack consumer on `queue` with consumer tag `tag` ("" lets the broker pick).
pub async fn consume_no_ack(ch: &Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// Asserts that no delivery arrives within `ms`.
pub async fn no_delivery(consumer: &mut lapin::Consumer, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
        panic!(
            "unexpected delivery {:?}",
            d.map(|d| String::from_utf8_lossy(&d.data).to_string())
        );
    }
}

/// A field table from (key, value) pairs.
pub fn table(pairs: &[(&str, lapin::types::AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A long-string field value.
pub fn s(v: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(v.into())
}

/// An integer field value.
pub fn int(v: i64) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongLongInt(v)
}

/// Writes one raw frame (for wire-level tests).
pub fn write_frame(s: &mut TcpStream, kind: u8, channel: u16, payload: &[u8]) {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    s.write_all(&f).unwrap();
}

/// Reads one raw frame: (type, channel, payload).
pub fn read_frame(s: &mut TcpStream) -> (u8, u16, Vec<u8>) {
    let mut h = [0u8; 7];
    s.read_exact(&mut h).unwrap();
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    let mut p = vec![0u8; size + 1];
    s.read_exact(&mut p).unwrap();
    p.pop();
    (h[0], u16::from_be_bytes([h[1], h[2]]), p)
}

/// A minimal HTTP/1.1 client for the management API (one request per connection).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    auth: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to HTTP");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    let json = if payload.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload))
    };
    (status, json)
}

/// Polls `check` every 50 ms until it returns `Some` or `secs` pass.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
