//! Durability over real restarts of the `ferrymq` binary: clean restart,
//! repeated SIGKILL under a confirming publisher, damaged segment tails, and
//! files older versions left behind.

mod common;
use common::process::*;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrymq-dur-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn get_all(ch: &lapin::Channel, q: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push((
            String::from_utf8(m.delivery.data).unwrap(),
            m.delivery.redelivered,
        ));
    }
    out
}

#[tokio::test]
async fn clean_restart_keeps_durable_state_and_persistent_messages() {
    let dir = tmpdir("clean");
    let p = spawn(&dir, free_port());
    {
        let c = Connection::connect(&p.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("dq".into(), durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare(
            "tq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "dx".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "dq".into(),
            "dx".into(),
            "k.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..5 {
            let props = if i == 2 {
                BasicProperties::default()
            } else {
                persistent()
            };
            let c = ch
                .basic_publish(
                    "dx".into(),
                    "k.x".into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    props,
                )
                .await
                .unwrap();
            assert!(c.await.unwrap().is_ack());
        }
        publish_props(&ch, "", "tq", b"gone", persistent()).await;
        // Deliver m0 and leave it unacked: it must come back marked redelivered.
        let m = ch
            .basic_get("dq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, b"m0");
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.kill9();
    }
    let p = spawn(&dir, free_port());
    let c = Connection::connect(&p.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    let got = get_all(&ch, "dq").await;
    assert_eq!(
        got,
        vec![
            ("m0".into(), true),
            ("m1".into(), false),
            ("m3".into(), false),
            ("m4".into(), false)
        ],
        "persistent messages back in order, transient m2 gone"
    );
    expect_code(passive(&ch, "tq").await, 404);
    // The durable exchange and binding came back too.
    let ch = c.create_channel().await.unwrap();
    publish(&ch, "dx", "k.y", b"routed").await;
    assert!(get_all(&ch, "dq").await.iter().any(|(b, _)| b == "routed"));
    p.term();
    let _ = std::fs::remove_dir_all(dir);
}

/// Publishes persistent, numbered messages with confirms until the connection dies;
/// returns the numbers the broker confirmed.
async fn publish_until_killed(uri: String, start: u64, confirmed: Arc<Mutex<HashSet<u64>>>) -> u64 {
    let Ok(c) = Connection::connect(&uri, ConnectionProperties::default()).await else {
        return start;
    };
    let Ok(ch) = c.create_channel().await else {
        return start;
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return start;
    }
    let mut n = start;
    let mut inflight = std::collections::VecDeque::new();
    loop {
        let r = ch
            .basic_publish(
                "".into(),
                "crash".into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                persistent(),
            )
            .await;
        let Ok(pc) = r else { return n };
        inflight.push_back((n, pc));
        n += 1;
        if inflight.len() >= 200 {
            let (id, pc) = inflight.pop_front().unwrap();
            match pc.await {
                Ok(c) if c.is_ack() => {
                    confirmed.lock().unwrap().insert(id);
                }
                _ => return n,
            }
        }
    }
}

#[tokio::test]
async fn confirmed_messages_survive_repeated_sigkill_exactly_once() {
    let dir = tmpdir("kill");
    let port = free_port();
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let mut next = 0u64;
    {
        let p = spawn(&dir, port);
        let c = Connection::connect(&p.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        declare_durable(&ch, "crash").await.unwrap();
        c.close(200, "ok".into()).await.unwrap();
        p.term();
    }
    for cycle in 0..10 {
        let p = spawn(&dir, port);
        // Check: every confirmed message present exactly once, nothing duplicated.
        let c = Connection::connect(&p.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        let got = get_all(&ch, "crash").await;
        let mut seen = HashSet::new();
        for (body, _) in &got {
            let id: u64 = body.parse().unwrap();
            assert!(seen.insert(id), "cycle {cycle}: message {id} duplicated");
            assert!(
                id < next.max(1) || next == 0,
                "cycle {cycle}: message {id} was never published"
            );
        }
        let missing: Vec<u64> = confirmed
            .lock()
            .unwrap()
            .iter()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: confirmed messages lost: {:?}",
            &missing[..missing.len().min(10)]
        );
        // Closing the channel returns the fetched messages to the queue.
        c.close(200, "checked".into()).await.unwrap();
        // Publish for a while, then SIGKILL mid-stream.
        let publisher = tokio::spawn(publish_until_killed(p.uri(), next, confirmed.clone()));
        tokio::time::sleep(Duration::from_millis(300 + 37 * cycle)).await;
        p.kill9();
        next = publisher.await.unwrap().max(next);
        eprintln!(
            "cycle {cycle}: published up to {next}, confirmed {}",
            confirmed.lock().unwrap().len()
        );
    }
    assert!(
        confirmed.lock().unwrap().len() > 100,
        "the publisher made progress"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn damaged_segment_tail_is_cut_and_the_rest_delivered() {
    let dir = tmpdir("corrupt");
    let p = spawn(&dir, free_port());
    {
        let c = Connection::connect(&p.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        for q in ["torn", "flipped"] {
            declare_durable(&ch, q).await.unwrap();
        }
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for q in ["torn", "flipped"] {
            for i in 0..20 {
                let c = ch
                    .basic_publish(
                        "".into(),
                        q.into(),
                        BasicPublishOptions::default(),
                        format!("{q}-{i}").as_bytes(),
                        persistent(),
                    )
                    .await
                    .unwrap();
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    p.term();
    // Find each queue's single segment by content and damage its tail.
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.join("queues")).unwrap() {
        let qdir = entry.unwrap().path();
        for f in std::fs::read_dir(&qdir).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.starts_with("seg-") {
                continue;
            }
            let mut data = std::fs::read(&path).unwrap();
            if data.is_empty() {
                continue;
            }
            // Damage the last record, not the end mark written after it (a zero
            // length, then a check word).
            let n = data.len();
            if n >= 8 && data[n - 8..n - 4] == [0; 4] {
                data.truncate(n - 8);
            }
            if data.windows(4).any(|w| w == b"torn") {
                data.truncate(data.len() - 5);
            } else {
                let n = data.len();
                data[n - 2] ^= 0xff;
            }
            std::fs::write(&path, &data).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 2);
    let p = spawn(&dir, free_port());
    let c = Connection::connect(&p.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    for q in ["torn", "flipped"] {
        let got: Vec<String> = get_all(&ch, q).await.into_iter().map(|(b, _)| b).collect();
        let expected: Vec<String> = (0..19).map(|i| format!("{q}-{i}")).collect();
        assert_eq!(
            got, expected,
            "{q}: every intact message, never the damaged one"
        );
    }
    let log = p.log_text();
    assert!(
        log.contains("store recovery cut"),
        "the broker reports what it dropped:\n{log}"
    );
    p.term();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn concurrent_durable_declares_share_one_store_and_tx_commit_is_durable() {
    let dir = tmpdir("race");
    let p = spawn(&dir, free_port());
    {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let uri = p.uri();
            tasks.push(tokio::spawn(async move {
                let c = Connection::connect(&uri, ConnectionProperties::default())
                    .await
                    .unwrap();
                let ch = c.create_channel().await.unwrap();
                declare_durable(&ch, "raced").await.unwrap();
                c
            }));
        }
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.unwrap());
        }
        let ch = conns[0].create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let c = ch
            .basic_publish(
                "".into(),
                "raced".into(),
                BasicPublishOptions::default(),
                b"confirmed",
                persistent(),
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_ack());
        // A transaction's commit-ok also means "on disk" for persistent messages.
        let tx = conns[1].create_channel().await.unwrap();
        tx.tx_select().await.unwrap();
        tx.basic_publish(
            "".into(),
            "raced".into(),
            BasicPublishOptions::default(),
            b"committed",
            persistent(),
        )
        .await
        .unwrap();
        tx.tx_commit().await.unwrap();
        p.kill9();
    }
    let p = spawn(&dir, free_port());
    let c = Connection::connect(&p.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    let got: Vec<String> = get_all(&ch, "raced")
        .await
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    assert_eq!(got, ["confirmed", "committed"]);
    p.term();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn obsolete_link_window_files_are_removed_at_start() {
    let dir = tmpdir("dedup-files");
    let windows = dir.join("federation");
    std::fs::create_dir_all(&windows).unwrap();
    std::fs::write(windows.join("link-1.dedup"), [0u8; 64]).unwrap();
    let p = spawn(&dir, free_port());
    assert!(
        !windows.exists(),
        "the federation/ directory of per-link windows is gone"
    );
    assert!(p
        .log_text()
        .contains("removed 1 obsolete federation window file"));
    p.term();
    let _ = std::fs::remove_dir_all(dir);
}
