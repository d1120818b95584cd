//! Exchanges over real sockets with lapin: every type's routing, e2e bindings,
//! alternate exchanges, and the declare/delete error paths.

mod common;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn exchange(ch: &lapin::Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
}

async fn bind(ch: &lapin::Channel, q: &str, ex: &str, rk: &str, args: FieldTable) {
    ch.queue_bind(
        q.into(),
        ex.into(),
        rk.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .expect("queue.bind");
}

#[tokio::test]
async fn direct_fanout_and_default_routing() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    exchange(&ch, "d", ExchangeKind::Direct).await;
    exchange(&ch, "f", ExchangeKind::Fanout).await;
    for q in ["q1", "q2"] {
        declare(&ch, q, FieldTable::default()).await;
        bind(&ch, q, "f", "ignored", FieldTable::default()).await;
    }
    bind(&ch, "q1", "d", "k1", FieldTable::default()).await;
    bind(&ch, "q2", "d", "k2", FieldTable::default()).await;
    publish(&ch, "d", "k1", b"d1").await;
    publish(&ch, "d", "k2", b"d2").await;
    publish(&ch, "d", "nobody", b"lost").await;
    publish(&ch, "f", "x", b"f").await;
    publish(&ch, "", "q1", b"default").await;
    publish(&ch, "amq.direct", "k1", b"none").await;
    assert_eq!(drain(&ch, "q1").await, ["d1", "f", "default"]);
    assert_eq!(drain(&ch, "q2").await, ["d2", "f"]);
}

#[tokio::test]
async fn topic_wildcards() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    let patterns = [
        ("star", "a.*.c"),
        ("hash", "a.#"),
        ("all", "#"),
        ("exact", "a.b"),
        ("mid", "*.b.#"),
    ];
    for (q, p) in patterns {
        declare(&ch, q, FieldTable::default()).await;
        bind(&ch, q, "t", p, FieldTable::default()).await;
    }
    for key in ["a.b.c", "a", "a.b", "x.b", "z"] {
        publish(&ch, "t", key, key.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "star").await, ["a.b.c"]);
    assert_eq!(drain(&ch, "hash").await, ["a.b.c", "a", "a.b"]);
    assert_eq!(drain(&ch, "all").await, ["a.b.c", "a", "a.b", "x.b", "z"]);
    assert_eq!(drain(&ch, "exact").await, ["a.b"]);
    assert_eq!(drain(&ch, "mid").await, ["a.b.c", "a.b", "x.b"]);
}

#[tokio::test]
async fn topic_many_bindings_route_exactly() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    declare(&ch, "hit", FieldTable::default()).await;
    declare(&ch, "miss", FieldTable::default()).await;
    for i in 0..2000 {
        bind(
            &ch,
            "miss",
            "t",
            &format!("sensor.{i}.*"),
            FieldTable::default(),
        )
        .await;
    }
    bind(&ch, "hit", "t", "sensor.1234.temp", FieldTable::default()).await;
    publish(&ch, "t", "sensor.1234.temp", b"x").await;
    publish(&ch, "t", "sensor.99999.temp", b"y").await;
    assert_eq!(drain(&ch, "hit").await, ["x"]);
    // Bindings to one queue deliver one copy, not one per matching binding.
    assert_eq!(drain(&ch, "miss").await, ["x"]);
}

#[tokio::test]
async fn headers_all_any() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    exchange(&ch, "h", ExchangeKind::Headers).await;
    declare(&ch, "all", FieldTable::default()).await;
    declare(&ch, "any", FieldTable::default()).await;
    bind(
        &ch,
        "all",
        "h",
        "",
        table(&[("x-match", s("all")), ("a", s("1")), ("b", int(2))]),
    )
    .await;
    bind(
        &ch,
        "any",
        "h",
        "",
        table(&[("x-match", s("any")), ("a", s("1")), ("b", int(2))]),
    )
    .await;
    let send = |h: FieldTable, body: &'static str| {
        let ch = ch.clone();
        async move {
            publish_props(
                &ch,
                "h",
                "",
                body.as_bytes(),
                BasicProperties::default().with_headers(h),
            )
            .await
        }
    };
    send(
        table(&[("a", s("1")), ("b", AMQPValue::LongInt(2))]),
        "both",
    )
    .await;
    send(table(&[("a", s("1"))]), "a-only").await;
    send(table(&[("c", s("1"))]), "none").await;
    assert_eq!(drain(&ch, "all").await, ["both"]);
    assert_eq!(drain(&ch, "any").await, ["both", "a-only"]);
}

#[tokio::test]
async fn exchange_to_exchange_and_alternate() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    exchange(&ch, "src", ExchangeKind::Topic).await;
    exchange(&ch, "dst", ExchangeKind::Fanout).await;
    exchange(&ch, "unrouted", ExchangeKind::Fanout).await;
    ch.exchange_declare(
        "with-ae".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", s("unrouted"))]),
    )
    .await
    .unwrap();
    declare(&ch, "via-e2e", FieldTable::default()).await;
    declare(&ch, "ae-q", FieldTable::default()).await;
    ch.exchange_bind(
        "dst".into(),
        "src".into(),
        "a.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    bind(&ch, "via-e2e", "dst", "", FieldTable::default()).await;
    bind(&ch, "ae-q", "unrouted", "", FieldTable::default()).await;
    publish(&ch, "src", "a.b", b"routed").await;
    publish(&ch, "src", "b", b"dropped").await;
    publish(&ch, "with-ae", "nowhere", b"to-ae").await;
    assert_eq!(drain(&ch, "via-e2e").await, ["routed"]);
    assert_eq!(drain(&ch, "ae-q").await, ["to-ae"]);
    ch.exchange_unbind(
        "dst".into(),
        "src".into(),
        "a.#".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "src", "a.b", b"after-unbind").await;
    assert!(drain(&ch, "via-e2e").await.is_empty());
}

#[tokio::test]
async fn declare_errors() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    // Passive declare of a missing exchange: 404, channel closed.
    let text = expect_code(
        ch.exchange_declare(
            "missing".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
    assert_eq!(text, "NOT_FOUND - no exchange 'missing' in vhost '/'");
    // Unknown type: channel-level 406 (as RabbitMQ 4), the connection survives.
    let ch = c.create_channel().await.unwrap();
    let text = expect_code(
        ch.exchange_declare(
            "weird".into(),
            ExchangeKind::Custom("x-nope".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert!(text.contains("invalid exchange type 'x-nope'"), "{text}");
    // Reserved prefix: 403.
    let ch = c.create_channel().await.unwrap();
    expect_code(
        ch.exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    // Redeclare with another type: 406.
    let ch = c.create_channel().await.unwrap();
    exchange(&ch, "e1", ExchangeKind::Direct).await;
    let text = expect_code(
        ch.exchange_declare(
            "e1".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert!(
        text.contains("inequivalent arg 'type' for exchange 'e1'"),
        "{text}"
    );
    // Delete if-unused with a binding: 406; without: fine.
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "bq", FieldTable::default()).await;
    bind(&ch, "bq", "e1", "k", FieldTable::default()).await;
    expect_code(
        ch.exchange_delete(
            "e1".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await,
        406,
    );
    let ch = c.create_channel().await.unwrap();
    ch.exchange_delete("e1".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    // Bind to a missing exchange: 404.
    expect_code(
        ch.queue_bind(
            "bq".into(),
            "e1".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        404,
    );
    // The connection is still usable.
    let ch = c.create_channel().await.unwrap();
    exchange(&ch, "e2", ExchangeKind::Topic).await;
}

#[tokio::test]
async fn internal_exchange_refuses_publish_and_auto_delete() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.exchange_declare(
        "int".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let r = ch
        .basic_publish(
            "int".into(),
            "".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let r = match r {
        Ok(confirm) => confirm.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let text = expect_code(r, 403);
    assert!(
        text.contains("cannot publish to internal exchange 'int'"),
        "{text}"
    );

    let ch = c.create_channel().await.unwrap();
    ch.exchange_declare(
        "ad".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "adq", FieldTable::default()).await;
    bind(&ch, "adq", "ad", "", FieldTable::default()).await;
    ch.queue_unbind("adq".into(), "ad".into(), "".into(), FieldTable::default())
        .await
        .unwrap();
    // The last binding went, so the auto-delete exchange is gone.
    expect_code(
        ch.exchange_declare(
            "ad".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
}
