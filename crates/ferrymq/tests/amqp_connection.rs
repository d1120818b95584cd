//! Connection-level behaviour over real sockets: handshake, server properties,
//! authentication, vhost access, permissions, limits and the broker binary.

mod common;
use common::*;
use ferrymq_broker::auth::{Permission, User};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[tokio::test]
async fn server_properties_advertise_ferrymq_and_capabilities() {
    use ferrymq_broker::amq_protocol::frame::{parse_frame, AMQPFrame};
    use ferrymq_broker::amq_protocol::protocol::{connection, AMQPClass};
    let b = start().await;
    let port = b.port;
    // lapin does not expose server properties, so read connection.start by hand.
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        let (kind, ch, payload) = read_frame(&mut s);
        let mut f = vec![kind];
        f.extend_from_slice(&ch.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f.push(0xCE);
        f
    })
    .await
    .unwrap();
    let (_, frame) = parse_frame(&raw[..]).unwrap();
    let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(start))) = frame
    else {
        panic!("expected connection.start, got {frame:?}")
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(start.mechanisms.to_string(), "PLAIN AMQPLAIN");
    let props = start.server_properties;
    let product = props
        .inner()
        .get("product")
        .and_then(|v| v.as_long_string())
        .map(|s| s.to_string());
    assert_eq!(product.as_deref(), Some("FerryMQ"));
    let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
        panic!("capabilities table missing")
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
}

#[tokio::test]
async fn wrong_password_is_refused_with_403() {
    let b = start().await;
    let r = Connection::connect(
        &format!("amqp://guest:nope@127.0.0.1:{}/%2f", b.port),
        ConnectionProperties::default(),
    )
    .await;
    let Err(e) = r else { panic!("login must fail") };
    let (code, text) = amqp_error(&e).expect("connection.close with a reply code");
    assert_eq!(code, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_vhost_and_missing_permission_are_530() {
    let b = start().await;
    let r = Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{}/nowhere", b.port),
        ConnectionProperties::default(),
    )
    .await;
    let (code, text) = amqp_error(&r.err().unwrap()).unwrap();
    assert_eq!(
        (code, text.as_str()),
        (530, "NOT_ALLOWED - vhost nowhere not found")
    );
    b.running.broker.add_vhost("other");
    let r = Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{}/other", b.port),
        ConnectionProperties::default(),
    )
    .await;
    let (code, text) = amqp_error(&r.err().unwrap()).unwrap();
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "NOT_ALLOWED - access to vhost 'other' refused for user 'guest'"
        )
    );
}

#[tokio::test]
async fn permissions_are_enforced_per_operation() {
    let b = start().await;
    let broker = &b.running.broker;
    broker.put_user(User::with_password("app", "pw", vec![]));
    // May configure and read app.* queues, write only to the default exchange.
    broker.set_permission(
        "/",
        "app",
        Permission::new("^app\\.", "^(amq\\.default|app\\..*)$", "^app\\.").unwrap(),
    );
    let c = Connection::connect(
        &format!("amqp://app:pw@127.0.0.1:{}/%2f", b.port),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "app.q", FieldTable::default()).await;
    publish(&ch, "", "app.q", b"ok").await;
    assert_eq!(get_body(&ch, "app.q").await.unwrap(), b"ok");
    let text = expect_code(
        ch.queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - configure access to queue 'other' in vhost '/' refused for user 'app'"
    );
    let ch = c.create_channel().await.unwrap();
    let text = expect_code(
        ch.queue_bind(
            "app.q".into(),
            "amq.topic".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - read access to exchange 'amq.topic' in vhost '/' refused for user 'app'"
    );
    let (_gc, gch) = b.channel().await;
    declare(&gch, "secret", FieldTable::default()).await;
    let ch = c.create_channel().await.unwrap();
    let text = expect_code(
        ch.basic_get("secret".into(), BasicGetOptions::default())
            .await,
        403,
    );
    assert!(text.contains("read access to queue 'secret'"), "{text}");
}

#[tokio::test]
async fn listens_on_ipv6_loopback_too() {
    let b = start_with(|c| c.amqp_bind = "0.0.0.0:0".into()).await;
    let addrs = &b.running.amqp_addrs;
    if addrs.len() < 2 {
        eprintln!("no IPv6 on this machine; skipping the [::1] connection check");
        return;
    }
    assert_eq!(
        addrs[1].port(),
        addrs[0].port(),
        "both families on one port"
    );
    let port = addrs[1].port();
    // lapin's URI parser does not take bracketed IPv6 hosts; a raw socket shows the listener answers.
    let first = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("::1", port)).expect("connect over IPv6");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        read_frame(&mut s)
    })
    .await
    .unwrap();
    assert_eq!(&first.2[..4], &[0, 10, 0, 10], "connection.start over IPv6");
}

#[tokio::test]
async fn channel_max_and_reuse_of_open_channel() {
    let b = start_with(|c| c.channel_max = 3).await;
    let c = b.connect().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(c.create_channel().await.unwrap());
    }
    // lapin refuses locally past the negotiated channel_max.
    assert!(c.create_channel().await.is_err());
}

/// Performs the handshake by hand and returns the socket ready for channel frames.
fn raw_handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let _start = read_frame(&mut s);
    let mut payload = vec![0, 10, 0, 11];
    payload.extend_from_slice(&0u32.to_be_bytes()); // empty client properties
    payload.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N']);
    let resp = b"\0guest\0guest";
    payload.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    payload.extend_from_slice(resp);
    payload.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
    write_frame(&mut s, 1, 0, &payload);
    let _tune = read_frame(&mut s);
    let mut tune_ok = vec![0, 10, 0, 31, 0, 10];
    tune_ok.extend_from_slice(&131072u32.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes());
    write_frame(&mut s, 1, 0, &tune_ok);
    write_frame(&mut s, 1, 0, &[0, 10, 0, 40, 1, b'/', 0, 0]);
    let open_ok = read_frame(&mut s);
    assert_eq!(&open_ok.2[..4], &[0, 10, 0, 41]);
    s
}

/// Reads frames until a connection.close arrives; returns its reply code.
fn read_connection_close(s: &mut TcpStream) -> u16 {
    loop {
        let (kind, ch, p) = read_frame(s);
        if kind == 1 && ch == 0 && p[..4] == [0, 10, 0, 50] {
            return u16::from_be_bytes([p[4], p[5]]);
        }
    }
}

#[tokio::test]
async fn oversized_frame_is_501_before_the_body_arrives() {
    let b = start().await;
    let port = b.port;
    let code = tokio::task::spawn_blocking(move || {
        let mut s = raw_handshake(port);
        // Announce a 2 GiB frame and send nothing more.
        s.write_all(&[1, 0, 1, 0x7f, 0xff, 0xff, 0xff]).unwrap();
        read_connection_close(&mut s)
    })
    .await
    .unwrap();
    assert_eq!(code, 501);
    // The server keeps serving others.
    b.connect().await.create_channel().await.unwrap();
}

#[tokio::test]
async fn frame_on_unopened_channel_is_504_and_unknown_method_540() {
    let b = start().await;
    let port = b.port;
    let (c1, c2) = tokio::task::spawn_blocking(move || {
        let mut s = raw_handshake(port);
        // queue.declare on channel 5, never opened.
        write_frame(&mut s, 1, 5, &[0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 0]);
        let c1 = read_connection_close(&mut s);
        let mut s = raw_handshake(port);
        write_frame(&mut s, 1, 0, &[0, 99, 0, 1]);
        let c2 = read_connection_close(&mut s);
        (c1, c2)
    })
    .await
    .unwrap();
    assert_eq!(c1, 504);
    assert_eq!(c2, 540);
}

#[tokio::test]
async fn wrong_protocol_header_gets_ours_back() {
    let b = start().await;
    let port = b.port;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x00").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(reply, b"AMQP\x00\x00\x09\x01");
}

#[tokio::test]
async fn missed_heartbeats_drop_the_connection() {
    let b = start().await;
    let port = b.port;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        read_frame(&mut s);
        let mut payload = vec![0, 10, 0, 11, 0, 0, 0, 0, 5, b'P', b'L', b'A', b'I', b'N'];
        let resp = b"\0guest\0guest";
        payload.extend_from_slice(&(resp.len() as u32).to_be_bytes());
        payload.extend_from_slice(resp);
        payload.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
        write_frame(&mut s, 1, 0, &payload);
        read_frame(&mut s);
        let mut tune_ok = vec![0, 10, 0, 31, 0, 10];
        tune_ok.extend_from_slice(&131072u32.to_be_bytes());
        tune_ok.extend_from_slice(&1u16.to_be_bytes()); // heartbeat 1 s
        write_frame(&mut s, 1, 0, &tune_ok);
        write_frame(&mut s, 1, 0, &[0, 10, 0, 40, 1, b'/', 0, 0]);
        let t = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let mut heartbeats = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    heartbeats += buf[..n]
                        .windows(8)
                        .filter(|w| *w == [8, 0, 0, 0, 0, 0, 0, 0xCE])
                        .count()
                }
            }
        }
        (t.elapsed(), heartbeats)
    })
    .await
    .unwrap();
    assert!(
        closed_after.0 < Duration::from_secs(5),
        "closed after {:?}",
        closed_after.0
    );
    assert!(
        closed_after.0 >= Duration::from_millis(1500),
        "closed too early: {:?}",
        closed_after.0
    );
    assert!(closed_after.1 >= 1, "the server sends heartbeats too");
}

#[test]
fn binary_logs_listener_and_exits_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("ferrymq-bin-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrymq"))
        .args([
            "--amqp-bind",
            "127.0.0.1:0",
            "--http-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("FERRYMQ_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.contains("AMQP listener ready on 127.0.0.1:") {
            ready = true;
            break;
        }
    }
    assert!(ready, "listener line logged");
    unsafe_kill(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(dir.is_dir(), "data dir created");
    let _ = std::fs::remove_dir_all(dir);
}

fn unsafe_kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}
