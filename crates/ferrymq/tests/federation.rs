//! Queue federation between real FerryMQ brokers over loopback: lazy links,
//! pull only on demand, ack modes, headers, loop safety, reconnects, link cuts
//! through a TCP proxy and a SIGKILL of the downstream mid-transfer.

mod common;
use common::process::*;
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `bodies` to `queue` with confirms.
async fn publish_confirmed(ch: &Channel, queue: &str, bodies: impl IntoIterator<Item = String>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .ok();
    for b in bodies {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b.as_bytes(),
            persistent(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// Points `downstream` at `upstream` (upstream name `up`) with extra settings.
async fn add_upstream(downstream: &TestBroker, name: &str, upstream_port: u16, extra: Value) {
    let mut value = json!({"uri": format!("amqp://guest:guest@127.0.0.1:{upstream_port}"), "reconnect-delay": 0.2});
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    let (code, body) = downstream
        .api(
            "PUT",
            &format!("/api/parameters/federation-upstream/%2F/{name}"),
            Some(json!({"value": value})),
        )
        .await;
    assert!(code == 201 || code == 204, "{code} {body}");
}

async fn federate(downstream: &TestBroker, pattern: &str, definition: Value) {
    let (code, body) = downstream
        .api(
            "PUT",
            "/api/policies/%2F/federate",
            Some(json!({"pattern": pattern, "definition": definition, "apply-to": "queues"})),
        )
        .await;
    assert!(code == 201 || code == 204, "{code} {body}");
}

async fn links(b: &TestBroker) -> Vec<Value> {
    let (code, body) = b.api("GET", "/api/federation-links", None).await;
    assert_eq!(code, 200, "{body}");
    body.as_array().unwrap().clone()
}

async fn link_for(b: &TestBroker, queue: &str) -> Option<Value> {
    links(b).await.into_iter().find(|l| l["queue"] == queue)
}

async fn wait_status(b: &TestBroker, queue: &str, status: &str) -> Value {
    eventually(15, &format!("link of {queue} {status}"), || async {
        link_for(b, queue).await.filter(|l| l["status"] == status)
    })
    .await
}

async fn depth(b: &TestBroker, queue: &str) -> u64 {
    let (_, q) = b
        .api("GET", &format!("/api/queues/%2F/{queue}"), None)
        .await;
    q["messages"].as_u64().unwrap_or(0)
}

/// Consumes `n` messages, acking each; returns their bodies.
async fn consume_n(ch: &Channel, queue: &str, n: usize, prefetch: u16) -> Vec<String> {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .unwrap()
            .unwrap();
        out.push(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

#[tokio::test]
async fn seed_scenario_links_are_lazy_pull_on_demand_and_move_everything_once() {
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    for q in ["metric.cpu", "metric.memory"] {
        declare_durable(&cha, q).await.unwrap();
        publish_confirmed(&cha, q, (0..300).map(|i| format!("a-{i}"))).await;
    }
    add_upstream(&b, "old", a.port, json!({})).await;
    federate(&b, "^metric\\.", json!({"federation-upstream-set": "all"})).await;
    assert!(
        links(&b).await.is_empty(),
        "no link before the downstream queues exist"
    );
    let (_cb, chb) = b.channel().await;
    for q in ["metric.cpu", "metric.memory"] {
        declare_durable(&chb, q).await.unwrap();
    }
    let l = wait_status(&b, "metric.cpu", "paused").await;
    assert_eq!(l["upstream"], "old");
    assert_eq!(l["type"], "queue");
    assert!(l["established_at"].is_string());
    assert!(
        !l["uri"].as_str().unwrap().contains("guest"),
        "no credentials in {l}"
    );
    wait_status(&b, "metric.memory", "paused").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        depth(&a, "metric.cpu").await,
        300,
        "nothing moves without a consumer"
    );
    assert_eq!(depth(&b, "metric.cpu").await, 0);
    // The link probes the upstream queue: the backlog still waiting there is visible.
    let probed = eventually(10, "the upstream depth on the link", || async {
        let l = link_for(&b, "metric.cpu").await?;
        (l["upstream_messages"] == 300).then_some(l)
    })
    .await;
    assert_eq!(probed["upstream_consumers"], 0, "{probed}");

    // Live producers on the upstream while consumers move to the downstream.
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for q in ["metric.cpu", "metric.memory"] {
        let (stop, uri) = (stop.clone(), a.uri());
        producers.push(tokio::spawn(async move {
            let conn = lapin::Connection::connect(&uri, Default::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                publish_confirmed(&ch, q, [format!("live-{i}")]).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        }));
    }
    let mut consumers = Vec::new();
    for q in ["metric.cpu", "metric.memory"] {
        let (_c, ch) = b.channel().await;
        consumers.push((q, _c, ch));
    }
    let mut received: HashMap<&str, Vec<String>> = HashMap::new();
    let mut tasks = Vec::new();
    for (q, conn, ch) in consumers {
        tasks.push(tokio::spawn(async move {
            let _keep = conn;
            ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(
                    q.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let mut got = Vec::new();
            while let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_secs(3), consumer.next()).await
            {
                got.push(String::from_utf8(d.data.clone()).unwrap());
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            (q, got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Producers move: stop upstream producers, publish the rest on the downstream.
    stop.store(true, Ordering::Relaxed);
    let mut live = Vec::new();
    for p in producers {
        live.push(p.await.unwrap());
    }
    for q in ["metric.cpu", "metric.memory"] {
        publish_confirmed(&chb, q, (0..100).map(|i| format!("b-{i}"))).await;
    }
    for t in tasks {
        let (q, got) = t.await.unwrap();
        received.insert(q, got);
    }
    for (i, q) in ["metric.cpu", "metric.memory"].iter().enumerate() {
        let got = &received[q];
        let expected = 300 + live[i] + 100;
        assert_eq!(got.len(), expected, "{q}: every confirmed message once");
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), expected, "{q}: no duplicates");
        for prefix in ["a-", "live-", "b-"] {
            let seq: Vec<u32> = got
                .iter()
                .filter_map(|m| m.strip_prefix(prefix)?.parse().ok())
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "{q}: {prefix} order kept"
            );
        }
        assert_eq!(depth(&a, q).await, 0, "{q}: upstream drained");
    }
    let l = link_for(&b, "metric.cpu").await.unwrap();
    assert_eq!(
        l["messages_transferred"].as_u64().unwrap(),
        300 + live[0] as u64
    );
    assert_eq!(l["duplicates_dropped"], 0);
}

#[tokio::test]
async fn custom_upstream_queue_ack_modes_and_properties() {
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    for q in ["src-confirm", "src-publish", "src-noack"] {
        declare(&cha, q, FieldTable::default()).await;
    }
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_message_id("mid-1".into())
        .with_expiration("60000".into())
        .with_headers(table(&[("h", s("v"))]));
    for q in ["src-confirm", "src-publish", "src-noack"] {
        cha.basic_publish(
            "".into(),
            q.into(),
            Default::default(),
            b"payload",
            props.clone(),
        )
        .await
        .unwrap();
    }
    for (name, q, mode) in [
        ("u1", "src-confirm", "on-confirm"),
        ("u2", "src-publish", "on-publish"),
        ("u3", "src-noack", "no-ack"),
    ] {
        add_upstream(
            &b,
            name,
            a.port,
            json!({"queue": q, "ack-mode": mode, "prefetch-count": 10}),
        )
        .await;
    }
    let (_cb, chb) = b.channel().await;
    for (i, mode) in ["confirm", "publish", "noack"].iter().enumerate() {
        let (code, _) = b
            .api(
                "PUT",
                &format!("/api/policies/%2F/p-{mode}"),
                Some(json!({"pattern": format!("^local-{mode}$"), "definition": {"federation-upstream": format!("u{}", i + 1)}})),
            )
            .await;
        assert_eq!(code, 201);
        declare(&chb, &format!("local-{mode}"), FieldTable::default()).await;
    }
    for mode in ["confirm", "publish", "noack"] {
        let l = wait_status(&b, &format!("local-{mode}"), "paused").await;
        assert!(l["upstream_queue"].as_str().unwrap().starts_with("src-"));
        let (_c, ch) = b.channel().await;
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                format!("local-{mode}").as_str().into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"payload");
        let p = &d.properties;
        assert_eq!(p.content_type().as_ref().unwrap().as_str(), "text/plain");
        assert_eq!(*p.priority(), Some(3));
        assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "corr");
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), "mid-1");
        assert_eq!(p.expiration().as_ref().unwrap().as_str(), "60000");
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(h.get("h"), Some(&s("v")));
        assert!(
            h.get("x-ferrymq-id").is_none(),
            "the identity header stays internal"
        );
        let Some(AMQPValue::FieldArray(hops)) = h.get("x-received-from") else {
            panic!("x-received-from missing: {h:?}");
        };
        let Some(AMQPValue::FieldTable(hop)) = hops.as_slice().first() else {
            panic!("empty x-received-from");
        };
        let hop = hop.inner();
        assert!(
            matches!(hop.get("queue"), Some(AMQPValue::LongString(q)) if q.to_string().starts_with("src-"))
        );
        assert!(
            matches!(hop.get("uri"), Some(AMQPValue::LongString(u)) if !u.to_string().contains("guest"))
        );
        assert!(hop.contains_key("redelivered"));
        d.ack(BasicAckOptions::default()).await.unwrap();
        let src = format!("src-{mode}");
        eventually(10, "upstream emptied", || async {
            (depth(&a, &src).await == 0).then_some(())
        })
        .await;
        let l = link_for(&b, &format!("local-{mode}")).await.unwrap();
        assert_eq!(
            l["ack_mode"],
            if mode == "noack" {
                "no-ack"
            } else if mode == "publish" {
                "on-publish"
            } else {
                "on-confirm"
            }
        );
    }
}

#[tokio::test]
async fn links_follow_policy_upstream_and_queue_changes() {
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    declare(&cha, "jobs", FieldTable::default()).await;
    let (_cb, chb) = b.channel().await;
    declare(&chb, "jobs", FieldTable::default()).await;
    add_upstream(&b, "one", a.port, json!({})).await;
    assert!(links(&b).await.is_empty(), "no policy yet");
    let (_, p) = b
        .api("GET", "/api/parameters/federation-upstream/%2F/one", None)
        .await;
    let shown = p["value"]["uri"].as_str().unwrap();
    assert!(
        shown.starts_with("amqp://guest:***@127.0.0.1:"),
        "password hidden: {shown}"
    );
    federate(&b, "^jobs$", json!({"federation-upstream-set": "all"})).await;
    wait_status(&b, "jobs", "paused").await;
    // A second upstream in set "all" adds a second link; deleting it removes the link.
    add_upstream(&b, "two", a.port, json!({})).await;
    eventually(10, "two links", || async {
        (links(&b).await.len() == 2).then_some(())
    })
    .await;
    let (code, _) = b
        .api(
            "DELETE",
            "/api/parameters/federation-upstream/%2F/two",
            None,
        )
        .await;
    assert_eq!(code, 204);
    eventually(10, "one link", || async {
        (links(&b).await.len() == 1).then_some(())
    })
    .await;
    // Changing the upstream hot-swaps the link (new settings show up).
    add_upstream(&b, "one", a.port, json!({"consumer-tag": "swapped"})).await;
    eventually(10, "swapped link", || async {
        link_for(&b, "jobs")
            .await
            .filter(|l| l["consumer_tag"] == "swapped" && l["status"] == "paused")
    })
    .await;
    // Restart endpoint.
    let l = link_for(&b, "jobs").await.unwrap();
    let (code, _) = b
        .api(
            "DELETE",
            &format!(
                "/api/federation-links/vhost/%2F/{}/restart",
                l["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(code, 204);
    let (code, _) = b
        .api(
            "DELETE",
            "/api/federation-links/vhost/%2F/nope/restart",
            None,
        )
        .await;
    assert_eq!(code, 404);
    // Removing the policy stops the link; nothing was deleted upstream.
    let (code, _) = b.api("DELETE", "/api/policies/%2F/federate", None).await;
    assert_eq!(code, 204);
    eventually(10, "no links", || async {
        links(&b).await.is_empty().then_some(())
    })
    .await;
    passive(&cha, "jobs")
        .await
        .expect("upstream queue untouched");
    // Back with a policy; deleting the queue stops the link.
    federate(&b, "^jobs$", json!({"federation-upstream": "one"})).await;
    wait_status(&b, "jobs", "paused").await;
    chb.queue_delete("jobs".into(), Default::default())
        .await
        .unwrap();
    eventually(10, "no links", || async {
        links(&b).await.is_empty().then_some(())
    })
    .await;
    // Bad upstream definitions are refused with a reason.
    for bad in [
        json!({"uri": "http://x"}),
        json!({"uri": "amqp://h", "ack-mode": "sometimes"}),
        json!({"uri": "amqp://h", "prefetch-count": -5}),
    ] {
        let (code, body) = b
            .api(
                "PUT",
                "/api/parameters/federation-upstream/%2F/bad",
                Some(json!({"value": bad})),
            )
            .await;
        assert_eq!(code, 400, "{body}");
        assert!(body["reason"].is_string());
    }
}

#[tokio::test]
async fn upstream_down_shows_error_then_recovers() {
    let a_port = free_port();
    let a_dir = scratch_dir("up");
    let b = start().await;
    let (_cb, chb) = b.channel().await;
    declare(&chb, "work", FieldTable::default()).await;
    add_upstream(&b, "old", a_port, json!({})).await;
    federate(&b, "^work$", json!({"federation-upstream": "old"})).await;
    let l = wait_status(&b, "work", "error").await;
    assert!(l["error"].as_str().unwrap().contains("127.0.0.1"), "{l}");
    assert!(!l["error"].as_str().unwrap().contains("guest:guest"));
    // The upstream comes up: the link connects and resumes; a consumer gets the backlog.
    let a = spawn_with(&a_dir, a_port, 0);
    {
        let conn = lapin::Connection::connect(&a.uri(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, "work").await.unwrap();
        publish_confirmed(&ch, "work", (0..50).map(|i| format!("m{i}"))).await;
    }
    wait_status(&b, "work", "paused").await;
    let (_c, ch) = b.channel().await;
    let got = consume_n(&ch, "work", 50, 10).await;
    assert_eq!(got.len(), 50);
    assert!(
        link_for(&b, "work").await.unwrap()["reconnects"]
            .as_u64()
            .unwrap()
            >= 1
    );
    a.kill9();
    let _ = std::fs::remove_dir_all(&a_dir);
}

/// A consumer on `broker` takes one message (its demand makes the link pull it in),
/// then leaves and puts the message back in the local queue; returns the body.
async fn pull_and_leave(broker: &TestBroker, queue: &str) -> Vec<u8> {
    let (_conn, ch) = broker.channel().await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next_delivery(&mut consumer).await;
    ch.basic_cancel(consumer.tag().as_str().into(), Default::default())
        .await
        .unwrap();
    let body = d.data.clone();
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    body
}

#[tokio::test]
async fn three_broker_chain_appends_x_received_from_and_loops_are_refused() {
    let a = start().await;
    let b = start().await;
    let c = start().await;
    for x in [&a, &b, &c] {
        let (_conn, ch) = x.channel().await;
        declare(&ch, "chain", FieldTable::default()).await;
    }
    add_upstream(&b, "a", a.port, json!({})).await;
    federate(&b, "^chain$", json!({"federation-upstream": "a"})).await;
    add_upstream(&c, "b", b.port, json!({})).await;
    federate(&c, "^chain$", json!({"federation-upstream": "b"})).await;
    // C's link consumes on B with priority -1, which is no demand for B's link; so the
    // message moves in two steps: a consumer on B pulls it over, then C's consumer.
    let (_ca, cha) = a.channel().await;
    publish(&cha, "", "chain", b"hop").await;
    // Step 1: a consumer on B pulls the message from A, then rejects it back into B.
    pull_and_leave(&b, "chain").await;
    // Step 2: C pulls it from B.
    let (_cc, chc) = c.channel().await;
    let mut consumer = chc
        .basic_consume(
            "chain".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next_delivery(&mut consumer).await;
    let h = d.properties.headers().as_ref().unwrap().inner();
    let Some(AMQPValue::FieldArray(hops)) = h.get("x-received-from") else {
        panic!("{h:?}")
    };
    assert_eq!(hops.as_slice().len(), 2, "one entry per hop: {hops:?}");
    d.ack(BasicAckOptions::default()).await.unwrap();
    drop(consumer);
    chc.close(200, "done".into()).await.unwrap();
    wait_status(&c, "chain", "paused").await;

    // Loop: A federates from B too. A message that left A's queue for B is not pulled back.
    add_upstream(&a, "b", b.port, json!({})).await;
    federate(&a, "^chain$", json!({"federation-upstream": "b"})).await;
    wait_status(&a, "chain", "paused").await;
    publish(&cha, "", "chain", b"roundtrip").await;
    assert_eq!(pull_and_leave(&b, "chain").await, b"roundtrip");
    // Now only A has a consumer: A's link sees the message already left A's queue.
    let (_ca2, cha2) = a.channel().await;
    let mut consumer = cha2
        .basic_consume(
            "chain".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    no_delivery(&mut consumer, 1500).await;
    eventually(10, "loop refused", || async {
        link_for(&a, "chain")
            .await
            .filter(|l| l["loops_refused"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    assert_eq!(
        depth(&b, "chain").await,
        1,
        "the message stays on B, not lost"
    );
}

/// A TCP proxy that forwards to `target` and cuts every open connection every `every`.
async fn cutting_proxy(target: u16, every: Duration) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (cut_tx, _) = tokio::sync::broadcast::channel::<()>(4);
        let cutter = cut_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = cutter.send(());
            }
        });
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let mut cut = cut_tx.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.recv() => {}
                }
            });
        }
    });
    (port, handle)
}

/// Gets every message of a queue; returns bodies.
async fn get_all(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    out
}

fn assert_exactly_once(got: &[String], n: usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let missing: Vec<_> = (0..n)
        .map(|i| format!("m{i}"))
        .filter(|m| !counts.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(got.len(), n);
}

#[tokio::test]
async fn link_cuts_lose_nothing_and_duplicate_nothing() {
    let a = start().await;
    let b = start().await;
    let (proxy, proxy_task) = cutting_proxy(a.port, Duration::from_millis(400)).await;
    let (_ca, cha) = a.channel().await;
    declare_durable(&cha, "cut").await.unwrap();
    let (_cb, chb) = b.channel().await;
    declare_durable(&chb, "cut").await.unwrap();
    add_upstream(
        &b,
        "old",
        proxy,
        json!({"prefetch-count": 200, "reconnect-delay": 0.05}),
    )
    .await;
    federate(&b, "^cut$", json!({"federation-upstream": "old"})).await;
    // Demand without acks: the downstream holds everything it stored, so the count
    // at the end is exact (no local redelivery to confuse it).
    let (_cc, chc) = b.channel().await;
    let consumer = chc
        .basic_consume(
            "cut".into(),
            "holder".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    const N: usize = 4000;
    let publisher = {
        let uri = a.uri();
        tokio::spawn(async move {
            let conn = lapin::Connection::connect(&uri, Default::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            for start in (0..N).step_by(100) {
                let bodies: Vec<String> = (start..start + 100).map(|i| format!("m{i}")).collect();
                publish_confirmed(&ch, "cut", bodies).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    publisher.await.unwrap();
    eventually(60, "upstream drained", || async {
        (depth(&a, "cut").await == 0).then_some(())
    })
    .await;
    proxy_task.abort();
    let l = link_for(&b, "cut").await.unwrap();
    assert!(
        l["reconnects"].as_u64().unwrap() >= 1,
        "the proxy cut the link: {l}"
    );
    drop(consumer);
    chc.close(200, "done".into()).await.unwrap();
    let got = get_all(&chb, "cut").await;
    assert_exactly_once(&got, N);
}

/// On a broker process: a durable `queue`, upstream `old` with `upstream` settings, and a
/// policy federating exactly that queue from it.
async fn federate_over_http(http_port: u16, queue: &str, upstream: Value) {
    let auth = Some(("guest", "guest"));
    let put = |path: String, body: Value| async move {
        let (code, answer) = http(http_port, "PUT", &path, Some(body), auth).await;
        assert!(code == 201 || code == 204, "{path}: {code} {answer}");
    };
    put(format!("/api/queues/%2F/{queue}"), json!({"durable": true})).await;
    put(
        "/api/parameters/federation-upstream/%2F/old".into(),
        json!({"value": upstream}),
    )
    .await;
    let policy =
        json!({"pattern": format!("^{queue}$"), "definition": {"federation-upstream": "old"}});
    put("/api/policies/%2F/f".into(), policy).await;
}

/// An empty scratch directory for a broker's data, named after the test.
fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrymq-fed-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An upstream broker whose durable queue holds `n` confirmed messages `m0`…;
/// the connection is returned so the broker keeps its client.
async fn upstream_with_backlog(queue: &str, n: usize) -> (TestBroker, lapin::Connection) {
    let a = start().await;
    let (conn, ch) = a.channel().await;
    declare_durable(&ch, queue).await.unwrap();
    publish_confirmed(&ch, queue, (0..n).map(|i| format!("m{i}"))).await;
    (a, conn)
}

/// The federation links of a broker started with [`spawn_with`].
async fn links_over_http(http_port: u16) -> Value {
    let (_, links) = http(
        http_port,
        "GET",
        "/api/federation-links",
        None,
        Some(("guest", "guest")),
    )
    .await;
    links
}

#[tokio::test]
async fn downstream_sigkill_mid_transfer_loses_nothing_and_duplicates_nothing() {
    const N: usize = 6000;
    let (a, _ca) = upstream_with_backlog("kill", N).await;
    let dir = scratch_dir("kill");
    let (port, http_port) = (free_port(), free_port());
    let mut kills = 0;
    loop {
        let b = spawn_with(&dir, port, http_port);
        if kills == 0 {
            let upstream = json!({"uri": a.uri(), "prefetch-count": 300, "reconnect-delay": 0.05});
            federate_over_http(http_port, "kill", upstream).await;
        }
        // A consumer that never acks keeps demand up.
        let conn = lapin::Connection::connect(&b.uri(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let _consumer = ch
            .basic_consume(
                "kill".into(),
                "holder".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        if kills < 3 {
            // Kill once the transfer is under way (some but not all moved).
            let before = depth(&a, "kill").await;
            eventually(30, "transfer under way", || async {
                let d = depth(&a, "kill").await;
                (d + 500 < before || d == 0).then_some(())
            })
            .await;
            b.kill9();
            kills += 1;
            continue;
        }
        eventually(60, "upstream drained", || async {
            (depth(&a, "kill").await == 0).then_some(())
        })
        .await;
        drop(_consumer);
        ch.close(200, "done".into()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let got = get_all(&ch, "kill").await;
        let links = links_over_http(http_port).await;
        eprintln!("after {kills} kills: {links}");
        assert_exactly_once(&got, N);
        b.term();
        break;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one AMQP frame: its 7-byte header, then payload and frame-end octet.
async fn read_frame(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<([u8; 7], Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 7];
    r.read_exact(&mut head).await.ok()?;
    let size = u32::from_be_bytes(head[3..7].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; size + 1];
    r.read_exact(&mut rest).await.ok()?;
    Some((head, rest))
}

/// A TCP proxy to `target` that, while `swallow` is set, drops the `basic.ack`
/// frames the client sends (everything else passes): acks lost in flight. While
/// `unflag` is set, it clears the redelivered flag of the deliveries the server
/// sends: what an upstream that crashed before its delivered marks reached the
/// disk sends.
async fn ack_swallowing_proxy(
    target: u16,
    swallow: Arc<AtomicBool>,
    unflag: Arc<AtomicBool>,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = listener.accept().await.unwrap();
            let swallow = swallow.clone();
            let unflag = unflag.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let (mut client_r, mut client_w) = inbound.into_split();
                let (mut server_r, mut server_w) = outbound.into_split();
                // Server to client, frame by frame.
                tokio::spawn(async move {
                    while let Some((head, mut rest)) = read_frame(&mut server_r).await {
                        let is_deliver =
                            head[0] == 1 && rest.len() > 5 && rest[..4] == [0, 60, 0, 60];
                        if is_deliver && unflag.load(Ordering::Relaxed) {
                            // class, method, consumer tag, delivery tag, then the flag.
                            let at = 4 + 1 + rest[4] as usize + 8;
                            if let Some(flag) = rest.get_mut(at) {
                                *flag = 0;
                            }
                        }
                        if client_w.write_all(&head).await.is_err()
                            || client_w.write_all(&rest).await.is_err()
                        {
                            return;
                        }
                    }
                });
                // Client to server, frame by frame after the 8-byte protocol header.
                let mut header = [0u8; 8];
                if client_r.read_exact(&mut header).await.is_err()
                    || server_w.write_all(&header).await.is_err()
                {
                    return;
                }
                while let Some((head, rest)) = read_frame(&mut client_r).await {
                    let is_ack = head[0] == 1 && rest.len() >= 4 && rest[..4] == [0, 60, 0, 80];
                    if is_ack && swallow.load(Ordering::Relaxed) {
                        continue;
                    }
                    if server_w.write_all(&head).await.is_err()
                        || server_w.write_all(&rest).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The downstream stores and its consumer consumes every message, but the link's
/// acks never reach the upstream; then the downstream is killed. The upstream
/// redelivers everything to the restarted downstream, which must recognise all of
/// it (the messages are gone from its queue; only their logged identities remain),
/// even without the redelivered flag, as an upstream that crashed too sends them.
#[tokio::test]
async fn consumed_messages_whose_upstream_acks_were_lost_are_not_stored_again() {
    const N: usize = 300;
    let (a, _ca) = upstream_with_backlog("lost-acks", N).await;
    let swallow = Arc::new(AtomicBool::new(true));
    let unflag = Arc::new(AtomicBool::new(false));
    let proxy = ack_swallowing_proxy(a.port, swallow.clone(), unflag.clone()).await;
    let dir = scratch_dir("lost-acks");
    let (port, http_port) = (free_port(), free_port());
    let b = spawn_with(&dir, port, http_port);
    let upstream = json!({"uri": format!("amqp://guest:guest@127.0.0.1:{proxy}"),
        "prefetch-count": 1000, "reconnect-delay": 0.05});
    federate_over_http(http_port, "lost-acks", upstream).await;
    let conn = lapin::Connection::connect(&b.uri(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = consume_n(&ch, "lost-acks", N, 100).await;
    assert_exactly_once(&got, N);
    // The consumer's acks reach the disk with the next sync round.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(depth(&a, "lost-acks").await, N as u64, "no ack got through");
    b.kill9();
    drop(conn);
    swallow.store(false, Ordering::Relaxed);
    unflag.store(true, Ordering::Relaxed);
    let b = spawn_with(&dir, port, http_port);
    // A consumer makes demand, so the restarted link pulls the redeliveries.
    let conn = lapin::Connection::connect(&b.uri(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume_no_ack(&ch, "lost-acks", "after").await;
    eventually(30, "upstream drained by the restarted link", || async {
        (depth(&a, "lost-acks").await == 0).then_some(())
    })
    .await;
    let links = links_over_http(http_port).await;
    assert_eq!(links[0]["duplicates_dropped"], N as u64, "{links}");
    no_delivery(&mut consumer, 500).await;
    b.term();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On-confirm holds a persistent message back until its round; a transient message
/// behind it waits too, or the downstream's consumers would see the upstream's order
/// changed.
#[tokio::test]
async fn on_confirm_keeps_the_order_of_persistent_and_transient_messages() {
    const N: usize = 400;
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    declare_durable(&cha, "mixed").await.unwrap();
    cha.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..N {
        let mode = if i % 3 == 0 { 2 } else { 1 };
        cha.basic_publish(
            "".into(),
            "mixed".into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default().with_delivery_mode(mode),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    add_upstream(&b, "up", a.port, json!({"ack-mode": "on-confirm"})).await;
    federate(&b, "^mixed$", json!({"federation-upstream": "up"})).await;
    let (_cb, chb) = b.channel().await;
    declare_durable(&chb, "mixed").await.unwrap();
    let got = consume_n(&chb, "mixed", N, 1000).await;
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn links_survive_a_downstream_restart() {
    let a = start().await;
    let (_ca, cha) = a.channel().await;
    declare_durable(&cha, "persist").await.unwrap();
    let dir = scratch_dir("restart");
    let (port, http_port) = (free_port(), free_port());
    let b = spawn_with(&dir, port, http_port);
    let auth = Some(("guest", "guest"));
    federate_over_http(http_port, "persist", json!({"uri": a.uri()})).await;
    let linked = || async {
        let (_, l) = http(http_port, "GET", "/api/federation-links", None, auth).await;
        l.as_array()
            .and_then(|a| a.first().cloned())
            .filter(|l| l["status"] == "paused")
    };
    eventually(15, "link before restart", linked).await;
    b.term();
    let b = spawn_with(&dir, port, http_port);
    eventually(15, "link after restart", linked).await;
    publish_confirmed(&cha, "persist", ["after-restart".to_string()]).await;
    let conn = lapin::Connection::connect(&b.uri(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = consume_n(&ch, "persist", 1, 1).await;
    assert_eq!(got, ["after-restart"]);
    b.term();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn prefetch_one_consumer_causes_no_consume_cancel_storm_and_links_resume() {
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    declare_durable(&cha, "slow").await.unwrap();
    publish_confirmed(&cha, "slow", (0..300).map(|i| format!("m{i}"))).await;
    let (_cb, chb) = b.channel().await;
    declare_durable(&chb, "slow").await.unwrap();
    add_upstream(&b, "old", a.port, json!({"prefetch-count": 1})).await;
    federate(&b, "^slow$", json!({"federation-upstream": "old"})).await;
    wait_status(&b, "slow", "paused").await;
    // A prefetch-1 consumer: demand comes and goes with every message.
    {
        let (_c, ch) = b.channel().await;
        let got = consume_n(&ch, "slow", 150, 1).await;
        assert_eq!(got.len(), 150);
    }
    let l = link_for(&b, "slow").await.unwrap();
    assert!(
        l["pauses"].as_u64().unwrap() <= 5,
        "the link kept consuming through short gaps in demand: {l}"
    );
    // The consumer went away: the link pauses and nothing more moves. A delivery in
    // flight when it cancelled is still settled (stored, synced, then acked) and may
    // leave the upstream just after the pause shows: wait for it first.
    wait_status(&b, "slow", "paused").await;
    eventually(15, "in-flight delivery settled", || async {
        let (_, q) = a.api("GET", "/api/queues/%2F/slow", None).await;
        (q["messages_unacknowledged"].as_u64() == Some(0)).then_some(())
    })
    .await;
    let left = depth(&a, "slow").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(depth(&a, "slow").await, left);
    // It comes back: the link resumes and the rest arrives.
    let (_c, ch) = b.channel().await;
    let rest = consume_n(&ch, "slow", 150, 10).await;
    let expected: Vec<String> = (150..300).map(|i| format!("m{i}")).collect();
    assert_eq!(rest, expected, "resumed in order");
}

/// A TLS-terminating proxy in front of `target` with a fresh certificate for
/// `localhost` from a fresh CA; returns its port and the CA's PEM path.
async fn tls_proxy(target: u16, dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    // A CA and a server certificate it signs (webpki refuses a CA as the server's own).
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ferrymq-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr",
        "x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out cert.pem -extfile ext.cnf",
    ] {
        let ok = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args}");
    }
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let cert = ca;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn amqps_upstreams_verify_the_server_certificate() {
    let a = start().await;
    let b = start().await;
    let dir = std::env::temp_dir().join(format!("ferrymq-fed-tls-{}", std::process::id()));
    let (tls_port, cert) = tls_proxy(a.port, &dir).await;
    let (_ca, cha) = a.channel().await;
    declare(&cha, "secure", FieldTable::default()).await;
    declare(&cha, "untrusted", FieldTable::default()).await;
    publish(&cha, "", "secure", b"over tls").await;
    let (_cb, chb) = b.channel().await;
    declare(&chb, "secure", FieldTable::default()).await;
    declare(&chb, "untrusted", FieldTable::default()).await;
    let value = |extra: &str| json!({"value": {"uri": format!("amqps://guest:guest@localhost:{tls_port}/%2F{extra}"), "reconnect-delay": 0.2}});
    let trusted = value(&format!("?cacertfile={}", cert.display()));
    b.api(
        "PUT",
        "/api/parameters/federation-upstream/%2F/tls",
        Some(trusted),
    )
    .await;
    b.api(
        "PUT",
        "/api/parameters/federation-upstream/%2F/plain-roots",
        Some(value("")),
    )
    .await;
    b.api(
        "PUT",
        "/api/policies/%2F/p1",
        Some(json!({"pattern": "^secure$", "definition": {"federation-upstream": "tls"}})),
    )
    .await;
    b.api(
        "PUT",
        "/api/policies/%2F/p2",
        Some(
            json!({"pattern": "^untrusted$", "definition": {"federation-upstream": "plain-roots"}}),
        ),
    )
    .await;
    let l = wait_status(&b, "secure", "paused").await;
    assert!(
        l["uri"].as_str().unwrap().starts_with("amqps://localhost:"),
        "{l}"
    );
    let (_c, ch) = b.channel().await;
    assert_eq!(consume_n(&ch, "secure", 1, 1).await, ["over tls"]);
    // A self-signed certificate is refused against the system roots, and says why.
    let l = wait_status(&b, "untrusted", "error").await;
    assert!(
        l["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{l}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_reused_message_id_is_not_a_duplicate() {
    let a = start().await;
    let b = start().await;
    let (_ca, cha) = a.channel().await;
    declare(&cha, "orders", FieldTable::default()).await;
    // An application that reuses message-id as a business key: three distinct messages.
    for step in ["created", "paid", "shipped"] {
        let props = BasicProperties::default().with_message_id("order-42".into());
        cha.basic_publish(
            "".into(),
            "orders".into(),
            Default::default(),
            step.as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    let (_cb, chb) = b.channel().await;
    declare(&chb, "orders", FieldTable::default()).await;
    add_upstream(&b, "old", a.port, json!({})).await;
    federate(&b, "^orders$", json!({"federation-upstream": "old"})).await;
    wait_status(&b, "orders", "paused").await;
    let (_c, ch) = b.channel().await;
    assert_eq!(
        consume_n(&ch, "orders", 3, 10).await,
        ["created", "paid", "shipped"]
    );
    assert_eq!(
        link_for(&b, "orders").await.unwrap()["duplicates_dropped"],
        0
    );
}
