//! The basic class over real sockets with lapin: consume/qos/acks, returns,
//! confirms, transactions, priorities, cancel notification, direct reply-to.

mod common;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::time::Duration;

#[tokio::test]
async fn prefetch_limits_unacked_deliveries() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "q", FieldTable::default()).await;
    for i in 0..5 {
        publish(&ch, "", "q", format!("{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "q".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d0 = next_delivery(&mut c).await;
    let d1 = next_delivery(&mut c).await;
    no_delivery(&mut c, 200).await;
    d0.ack(BasicAckOptions::default()).await.unwrap();
    let d2 = next_delivery(&mut c).await;
    assert_eq!(d2.data, b"2");
    no_delivery(&mut c, 200).await;
    // ack multiple settles d1 and d2 at once.
    d2.ack(BasicAckOptions { multiple: true }).await.unwrap();
    let _ = d1;
    assert_eq!(next_delivery(&mut c).await.data, b"3");
    assert_eq!(next_delivery(&mut c).await.data, b"4");
}

#[tokio::test]
async fn global_prefetch_spans_consumers() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "g1", FieldTable::default()).await;
    declare(&ch, "g2", FieldTable::default()).await;
    for q in ["g1", "g2"] {
        for i in 0..3 {
            publish(&ch, "", q, format!("{q}-{i}").as_bytes()).await;
        }
    }
    ch.basic_qos(2, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = ch
        .basic_consume(
            "g1".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut c2 = ch
        .basic_consume(
            "g2".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let a = next_delivery(&mut c1).await;
    let b2 = next_delivery(&mut c1).await;
    no_delivery(&mut c2, 200).await;
    b2.ack(BasicAckOptions { multiple: true }).await.unwrap();
    let _ = a;
    // Capacity came back to the channel: both consumers may receive again.
    let x = next_delivery(&mut c1).await;
    let y = next_delivery(&mut c2).await;
    assert_eq!(x.data, b"g1-2");
    assert_eq!(y.data, b"g2-0");
}

#[tokio::test]
async fn nack_requeue_keeps_order_and_sets_redelivered() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rq", FieldTable::default()).await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "rq", m.as_bytes()).await;
    }
    let mut tags = Vec::new();
    for _ in 0..3 {
        let m = ch
            .basic_get("rq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(!m.delivery.redelivered);
        tags.push(m.delivery.delivery_tag);
    }
    // Requeue "b" alone, then "a" and "c" with multiple.
    ch.basic_nack(
        tags[1],
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .unwrap();
    ch.basic_nack(
        tags[2],
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("rq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        assert!(m.delivery.redelivered);
        got.push(String::from_utf8(m.delivery.data).unwrap());
    }
    assert_eq!(got, ["a", "b", "c"]);
}

#[tokio::test]
async fn reject_without_requeue_drops_and_unknown_tag_is_406() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "rj", FieldTable::default()).await;
    publish(&ch, "", "rj", b"x").await;
    let m = ch
        .basic_get("rj".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    )
    .await
    .unwrap();
    assert!(ch
        .basic_get("rj".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    ch.basic_ack(99, BasicAckOptions::default()).await.unwrap();
    // The error arrives asynchronously as channel.close; the next call sees it.
    let r = passive(&ch, "rj").await;
    match r {
        Err(e) => match amqp_error(&e) {
            Some((code, text)) => {
                assert_eq!(code, 406);
                assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 99");
            }
            // The close overtook the declare: lapin reports the channel as closed.
            None => assert!(!ch.status().connected(), "channel must be closed: {e:?}"),
        },
        Ok(q) => panic!("channel should have been closed, got {q:?}"),
    }
}

#[tokio::test]
async fn recover_redelivers_unacked() {
    // Checked with basic.get: lapin drops consumer deliveries that arrive with recover-ok.
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rc", FieldTable::default()).await;
    publish(&ch, "", "rc", b"m").await;
    let first = ch
        .basic_get("rc".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(!first.delivery.redelivered);
    assert!(ch
        .basic_get("rc".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let again = ch
        .basic_get("rc".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert!(again.delivery.redelivered);
    assert_eq!(again.delivery.data, b"m");
}

#[tokio::test]
async fn unacked_messages_return_when_channel_closes() {
    let b = start().await;
    let (c, ch) = b.channel().await;
    declare(&ch, "uc", FieldTable::default()).await;
    publish(&ch, "", "uc", b"m1").await;
    publish(&ch, "", "uc", b"m2").await;
    let ch2 = c.create_channel().await.unwrap();
    let mut cons = ch2
        .basic_consume(
            "uc".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    next_delivery(&mut cons).await;
    next_delivery(&mut cons).await;
    ch2.close(200, "done".into()).await.unwrap();
    let m = ch
        .basic_get("uc".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert!(m.delivery.redelivered);
    assert_eq!(m.delivery.data, b"m1");
}

#[tokio::test]
async fn consumer_priorities_serve_highest_first() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "cp", FieldTable::default()).await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut low = ch
        .basic_consume(
            "cp".into(),
            "low".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", int(-1))]),
        )
        .await
        .unwrap();
    let mut high = ch
        .basic_consume(
            "cp".into(),
            "high".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", int(5))]),
        )
        .await
        .unwrap();
    publish(&ch, "", "cp", b"1").await;
    publish(&ch, "", "cp", b"2").await;
    // High takes the first; it is then full (prefetch 1), so the second goes low.
    assert_eq!(next_delivery(&mut high).await.data, b"1");
    assert_eq!(next_delivery(&mut low).await.data, b"2");
}

#[tokio::test]
async fn exclusive_consumer_and_server_tags() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "ec", FieldTable::default()).await;
    let cons = ch
        .basic_consume(
            "ec".into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(
        cons.tag().as_str().starts_with("amq.ctag-"),
        "{}",
        cons.tag()
    );
    let ch2 = c.create_channel().await.unwrap();
    let text = expect_code(
        ch2.basic_consume(
            "ec".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - queue 'ec' in vhost '/' in exclusive use"
    );
}

#[tokio::test]
async fn consumer_cancel_notification_on_queue_delete() {
    let b = start().await;
    let (c, ch) = b.channel().await;
    declare(&ch, "cn", FieldTable::default()).await;
    let mut cons = ch
        .basic_consume(
            "cn".into(),
            "watch".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = c.create_channel().await.unwrap();
    ch2.queue_delete("cn".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // lapin ends the consumer stream when the server cancels it.
    use futures_lite::StreamExt;
    let end = tokio::time::timeout(Duration::from_secs(5), cons.next())
        .await
        .expect("stream ends");
    assert!(end.is_none(), "consumer stream should end on basic.cancel");
}

#[tokio::test]
async fn mandatory_returns_and_immediate_is_540() {
    let b = start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"ret",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"ret");

    let r = ch
        .basic_publish(
            "".into(),
            "x".into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"i",
            BasicProperties::default(),
        )
        .await;
    let r = match r {
        Ok(conf) => conf.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let text = expect_code(r, 540);
    assert_eq!(text, "NOT_IMPLEMENTED - immediate=true");
}

#[tokio::test]
async fn publisher_confirms_ack_in_order() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "pc", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(
            ch.basic_publish(
                "".into(),
                "pc".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        assert!(p.await.unwrap().is_ack());
    }
    assert_eq!(passive(&ch, "pc").await.unwrap().message_count(), 500);
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    let (_c2, observer) = b.channel().await;
    declare(&ch, "tx", FieldTable::default()).await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", "tx", b"rolled-back").await;
    assert!(get_body(&observer, "tx").await.is_none());
    ch.tx_rollback().await.unwrap();
    publish(&ch, "", "tx", b"committed").await;
    ch.tx_commit().await.unwrap();
    assert_eq!(drain(&observer, "tx").await, ["committed"]);
    // Acks inside a transaction take effect on commit.
    publish(&observer, "", "tx", b"to-ack").await;
    let m = ch
        .basic_get("tx".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.tx_rollback().await.unwrap();
    ch.tx_commit().await.unwrap();
    // The ack was rolled back, so the message is still unacked; closing the channel requeues it.
    ch.close(200, "x".into()).await.unwrap();
    assert_eq!(drain(&observer, "tx").await, ["to-ack"]);
    let ch3 = _c.create_channel().await.unwrap();
    let text = expect_code(ch3.tx_commit().await, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
}

#[tokio::test]
async fn direct_reply_to_round_trip() {
    let b = start().await;
    let (_c, client) = b.channel().await;
    let (_s, server) = b.channel().await;
    declare(&server, "rpc", FieldTable::default()).await;
    let mut replies = consume_no_ack(&client, "amq.rabbitmq.reply-to", "").await;
    publish_props(
        &client,
        "",
        "rpc",
        b"ping",
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await;
    let req = server
        .basic_get("rpc".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let reply_to = req.delivery.properties.reply_to().clone().unwrap();
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    publish(&server, "", reply_to.as_str(), b"pong").await;
    assert_eq!(next_delivery(&mut replies).await.data, b"pong");
}

#[tokio::test]
async fn properties_round_trip() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "props", FieldTable::default()).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), int(7));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(table(&[
            ("k", s("v")),
            ("n", lapin::types::AMQPValue::FieldTable(nested)),
        ]))
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_reply_to("rq".into())
        .with_expiration("60000".into())
        .with_message_id("mid-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_app_id("app".into());
    publish_props(&ch, "", "props", b"{}", props.clone()).await;
    let m = ch
        .basic_get("props".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.properties, props);
}

#[tokio::test]
async fn large_message_spans_frames() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "big", FieldTable::default()).await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "big", &body).await;
    assert_eq!(get_body(&ch, "big").await.unwrap(), body);
}

#[tokio::test]
async fn channel_flow_pauses_deliveries() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "fl", FieldTable::default()).await;
    let mut cons = consume_no_ack(&ch, "fl", "").await;
    ch.channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap();
    publish(&ch, "", "fl", b"held").await;
    no_delivery(&mut cons, 200).await;
    ch.channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut cons).await.data, b"held");
}
