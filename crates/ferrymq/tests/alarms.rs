//! Resource alarms block publishers (connection.blocked) and release them when cleared.

mod common;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn disk_alarm_blocks_publishers_until_space_returns() {
    // A limit no disk can meet raises the alarm at once.
    let b = start_with(|c| c.disk_free_limit = u64::MAX).await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "blocked", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let confirm = ch
        .basic_publish(
            "".into(),
            "blocked".into(),
            BasicPublishOptions::default(),
            b"held",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    // The first publish goes through before the connection counts as a publisher; the next is held.
    let _ = tokio::time::timeout(Duration::from_secs(2), confirm).await;
    // lapin itself holds publishes back once told it is blocked, so publish from a task.
    let publisher = ch.clone();
    let mut held = tokio::spawn(async move {
        publisher
            .basic_publish(
                "".into(),
                "blocked".into(),
                BasicPublishOptions::default(),
                b"held2",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut held)
            .await
            .is_err(),
        "no confirm while the disk alarm is on"
    );
    // Consumers are not blocked: another connection can still read.
    let (_c2, reader) = b.channel().await;
    passive(&reader, "blocked").await.unwrap();
    b.running.limits.disk_free_limit.store(0, Ordering::Relaxed);
    let c = tokio::time::timeout(Duration::from_secs(3), held)
        .await
        .expect("released")
        .unwrap();
    assert!(c.is_ack());
    assert_eq!(drain(&reader, "blocked").await, ["held", "held2"]);
}

#[tokio::test]
async fn clients_announcing_connection_blocked_are_told() {
    let b = start_with(|c| c.disk_free_limit = u64::MAX).await;
    let port = b.port;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reason = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        read_frame(&mut s);
        // start-ok with capabilities {connection.blocked: true}
        let mut props = Vec::new();
        let key = b"capabilities";
        props.push(key.len() as u8);
        props.extend_from_slice(key);
        props.push(b'F');
        let mut caps = Vec::new();
        let cap = b"connection.blocked";
        caps.push(cap.len() as u8);
        caps.extend_from_slice(cap);
        caps.extend_from_slice(&[b't', 1]);
        props.extend_from_slice(&(caps.len() as u32).to_be_bytes());
        props.extend_from_slice(&caps);
        let mut p = vec![0, 10, 0, 11];
        p.extend_from_slice(&(props.len() as u32).to_be_bytes());
        p.extend_from_slice(&props);
        p.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N']);
        let resp = b"\0guest\0guest";
        p.extend_from_slice(&(resp.len() as u32).to_be_bytes());
        p.extend_from_slice(resp);
        p.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
        write_frame(&mut s, 1, 0, &p);
        read_frame(&mut s);
        let mut t = vec![0, 10, 0, 31, 0, 10];
        t.extend_from_slice(&131072u32.to_be_bytes());
        t.extend_from_slice(&0u16.to_be_bytes());
        write_frame(&mut s, 1, 0, &t);
        write_frame(&mut s, 1, 0, &[0, 10, 0, 40, 1, b'/', 0, 0]);
        // Publish once: only publishing connections are blocked and told.
        write_frame(&mut s, 1, 1, &[0, 20, 0, 10, 0]);
        write_frame(&mut s, 1, 1, &[0, 60, 0, 40, 0, 0, 0, 1, b'q', 0]);
        let mut f = vec![
            2u8, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xCE,
        ];
        f[7..9].copy_from_slice(&[0, 60]);
        s.write_all(&f).unwrap();
        loop {
            let (kind, _, payload) = read_frame(&mut s);
            if kind == 1 && payload[..4] == [0, 10, 0, 60] {
                let n = payload[4] as usize;
                return String::from_utf8(payload[5..5 + n].to_vec()).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert!(reason.starts_with("low on disk"), "{reason}");
}
