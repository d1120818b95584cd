//! Queues over real sockets with lapin: declare variants, purge/delete, TTLs,
//! length limits, dead-lettering, priorities, single active consumer, and
//! argument validation.

mod common;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::Duration;

#[tokio::test]
async fn declare_variants_and_equivalence() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
    declare_durable(&ch, "dur").await.unwrap();
    publish(&ch, "", "dur", b"1").await;
    let again = passive(&ch, "dur").await.unwrap();
    assert_eq!(again.message_count(), 1);
    let text = expect_code(
        ch.queue_declare(
            "dur".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'dur' in vhost '/': received 'false' but current is 'true'"
    );
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "ttl", table(&[("x-message-ttl", int(1000))])).await;
    let text = expect_code(
        ch.queue_declare(
            "ttl".into(),
            QueueDeclareOptions::default(),
            table(&[("x-message-ttl", int(2000))]),
        )
        .await,
        406,
    );
    assert!(text.contains("inequivalent arg 'x-message-ttl'"), "{text}");
    let ch = c.create_channel().await.unwrap();
    let text = expect_code(passive(&ch, "missing").await, 404);
    assert_eq!(text, "NOT_FOUND - no queue 'missing' in vhost '/'");
}

#[tokio::test]
async fn argument_validation() {
    let b = start().await;
    let c = b.connect().await;
    let bad: Vec<(&str, AMQPValue)> = vec![
        ("x-message-ttl", int(-1)),
        ("x-message-ttl", s("soon")),
        ("x-expires", int(0)),
        ("x-max-length", int(-5)),
        ("x-overflow", s("explode")),
        ("x-max-priority", int(1000)),
        ("x-single-active-consumer", s("yes")),
        ("x-queue-type", s("weird")),
    ];
    for (k, v) in bad {
        let ch = c.create_channel().await.unwrap();
        let text = expect_code(
            ch.queue_declare(
                "argq".into(),
                QueueDeclareOptions::default(),
                table(&[(k, v.clone())]),
            )
            .await,
            406,
        );
        assert!(
            text.contains(&format!("invalid arg '{k}' for queue 'argq'")),
            "{k}: {text}"
        );
    }
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection() {
    let b = start().await;
    let (c1, ch1) = b.channel().await;
    ch1.queue_declare(
        "excl".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (_c2, ch2) = b.channel().await;
    let text = expect_code(
        ch2.basic_consume(
            "excl".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
        405,
    );
    assert!(
        text.starts_with("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl'"),
        "{text}"
    );
    // Closing the owner deletes the queue.
    c1.close(200, "bye".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ch3 = _c2.create_channel().await.unwrap();
    expect_code(passive(&ch3, "excl").await, 404);
}

#[tokio::test]
async fn purge_and_delete_conditions() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "p", FieldTable::default()).await;
    for i in 0..3 {
        publish(&ch, "", "p", format!("{i}").as_bytes()).await;
    }
    assert_eq!(
        ch.queue_purge("p".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        3
    );
    publish(&ch, "", "p", b"x").await;
    let text = expect_code(
        ch.queue_delete(
            "p".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await,
        406,
    );
    assert!(text.contains("not empty"), "{text}");
    let ch = c.create_channel().await.unwrap();
    let _consumer = consume_no_ack(&ch, "p", "c").await;
    let ch2 = c.create_channel().await.unwrap();
    let text = expect_code(
        ch2.queue_delete(
            "p".into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await,
        406,
    );
    assert!(text.contains("in use"), "{text}");
    let ch3 = c.create_channel().await.unwrap();
    ch3.queue_delete("p".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn auto_delete_queue_goes_with_last_consumer() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        "ad".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        "ad".into(),
        "t".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_cancel("t".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    expect_code(passive(&ch, "ad").await, 404);
}

#[tokio::test]
async fn message_ttl_and_per_message_expiration() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "ttl", table(&[("x-message-ttl", int(100))])).await;
    declare(&ch, "plain", FieldTable::default()).await;
    publish(&ch, "", "ttl", b"old").await;
    publish_props(
        &ch,
        "",
        "plain",
        b"short",
        BasicProperties::default().with_expiration("50".into()),
    )
    .await;
    publish(&ch, "", "plain", b"keeps").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&ch, "", "ttl", b"new").await;
    assert_eq!(drain(&ch, "ttl").await, ["new"]);
    assert_eq!(drain(&ch, "plain").await, ["keeps"]);
}

#[tokio::test]
async fn queue_expires_when_unused() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "exp", table(&[("x-expires", int(200))])).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    expect_code(passive(&ch, "exp").await, 404);
}

#[tokio::test]
async fn max_length_drop_head_and_reject_publish() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "dh", table(&[("x-max-length", int(2))])).await;
    for m in ["1", "2", "3"] {
        publish(&ch, "", "dh", m.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "dh").await, ["2", "3"]);

    declare(&ch, "bytes", table(&[("x-max-length-bytes", int(10))])).await;
    for m in ["aaaa", "bbbb", "cccc"] {
        publish(&ch, "", "bytes", m.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "bytes").await, ["bbbb", "cccc"]);

    declare(
        &ch,
        "rp",
        table(&[
            ("x-max-length", int(1)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let first = ch
        .basic_publish(
            "".into(),
            "rp".into(),
            BasicPublishOptions::default(),
            b"a",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let second = ch
        .basic_publish(
            "".into(),
            "rp".into(),
            BasicPublishOptions::default(),
            b"b",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(first.is_ack());
    assert!(second.is_nack());
    assert_eq!(drain(&ch, "rp").await, ["a"]);
}

#[tokio::test]
async fn dead_lettering_with_x_death() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        "dlx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "dead", FieldTable::default()).await;
    ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(
        &ch,
        "work",
        table(&[
            ("x-dead-letter-exchange", s("dlx")),
            ("x-dead-letter-routing-key", s("rk2")),
        ]),
    )
    .await;
    declare(
        &ch,
        "short",
        table(&[
            ("x-dead-letter-exchange", s("dlx")),
            ("x-message-ttl", int(50)),
        ]),
    )
    .await;
    publish(&ch, "", "work", b"rejected").await;
    publish(&ch, "", "short", b"expired").await;
    let m = ch
        .basic_get("work".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen = Vec::new();
    while let Some(m) = ch
        .basic_get("dead".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let d = m.delivery;
        let headers = d.properties.headers().clone().unwrap();
        let deaths = headers
            .inner()
            .get("x-death")
            .and_then(|v| v.as_array())
            .unwrap()
            .as_slice()
            .to_vec();
        let AMQPValue::FieldTable(first) = &deaths[0] else {
            panic!("x-death entry is a table")
        };
        let reason = first
            .inner()
            .get("reason")
            .unwrap()
            .as_long_string()
            .unwrap()
            .to_string();
        let queue = first
            .inner()
            .get("queue")
            .unwrap()
            .as_long_string()
            .unwrap()
            .to_string();
        let count = first
            .inner()
            .get("count")
            .unwrap()
            .as_long_long_int()
            .unwrap();
        seen.push((
            String::from_utf8(d.data).unwrap(),
            d.routing_key.to_string(),
            reason,
            queue,
            count,
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "expired".into(),
                "short".into(),
                "expired".into(),
                "short".into(),
                1
            ),
            (
                "rejected".into(),
                "rk2".into(),
                "rejected".into(),
                "work".into(),
                1
            ),
        ]
    );
}

#[tokio::test]
async fn priority_queue_orders_by_priority() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "prio", table(&[("x-max-priority", int(10))])).await;
    for (body, p) in [
        ("low", 1u8),
        ("high", 9),
        ("mid", 5),
        ("none", 0),
        ("over", 200),
    ] {
        publish_props(
            &ch,
            "",
            "prio",
            body.as_bytes(),
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    // A priority above x-max-priority counts as the maximum.
    assert_eq!(
        drain(&ch, "prio").await,
        ["over", "high", "mid", "low", "none"]
    );
}

#[tokio::test]
async fn single_active_consumer() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(
        &ch,
        "sac",
        table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut first = ch
        .basic_consume("sac".into(), "first".into(), opts, FieldTable::default())
        .await
        .unwrap();
    let mut second = ch
        .basic_consume("sac".into(), "second".into(), opts, FieldTable::default())
        .await
        .unwrap();
    for i in 0..4 {
        publish(&ch, "", "sac", format!("{i}").as_bytes()).await;
    }
    for i in 0..4 {
        assert_eq!(
            next_delivery(&mut first).await.data,
            format!("{i}").as_bytes()
        );
    }
    no_delivery(&mut second, 200).await;
    ch.basic_cancel("first".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    publish(&ch, "", "sac", b"after").await;
    assert_eq!(next_delivery(&mut second).await.data, b"after");
}

#[tokio::test]
async fn dead_letter_cycle_between_queues_ends() {
    // Two queues expiring into each other: RabbitMQ's cycle rule drops the message
    // the second time it would enter a queue it died in (no rejection in between).
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(
        &ch,
        "ping",
        table(&[
            ("x-message-ttl", int(0)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("pong")),
        ]),
    )
    .await;
    declare(
        &ch,
        "pong",
        table(&[
            ("x-message-ttl", int(0)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("ping")),
        ]),
    )
    .await;
    for i in 0..100 {
        publish(&ch, "", "ping", format!("{i}").as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(drain(&ch, "ping").await.is_empty());
    assert!(drain(&ch, "pong").await.is_empty());
    // The broker is still serving.
    declare(&ch, "after", FieldTable::default()).await;
}
