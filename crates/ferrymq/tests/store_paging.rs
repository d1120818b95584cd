//! Deep durable queues page messages out to the store and read them back in order.

mod common;
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::time::Duration;

#[tokio::test]
async fn deep_queue_pages_out_and_delivers_in_order() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare_durable(&ch, "deep").await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let total = 20_000u32;
    let mut last = None;
    for i in 0..total {
        let props = if i % 2 == 0 {
            BasicProperties::default().with_delivery_mode(2)
        } else {
            BasicProperties::default()
        };
        last = Some(
            ch.basic_publish(
                "".into(),
                "deep".into(),
                BasicPublishOptions::default(),
                format!("{i:08}").as_bytes(),
                props,
            )
            .await
            .unwrap(),
        );
    }
    last.unwrap().await.unwrap();
    let vhost = b.running.broker.vhost("/").unwrap();
    let q = vhost.queue("deep").unwrap();
    let (ready, _, bytes, _) = q.counts();
    assert_eq!(ready, total as usize);
    assert_eq!(bytes, total as u64 * 8);
    // A purge-free consume reads everything back, paged or not, in publish order.
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut cons = ch
        .basic_consume(
            "deep".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..total {
        let d = tokio::time::timeout(Duration::from_secs(10), cons.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.data, format!("{i:08}").as_bytes(), "message {i}");
        if i % 100 == 99 {
            d.ack(BasicAckOptions { multiple: true }).await.unwrap();
        }
    }
    // The last ack travels asynchronously; give the broker a moment to apply it.
    let mut counts = q.counts();
    for _ in 0..50 {
        if counts.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        counts = q.counts();
    }
    assert_eq!((counts.0, counts.1, counts.2), (0, 0, 0));
}

#[tokio::test]
async fn deep_queue_purge_counts_paged_messages() {
    let b = start().await;
    let (_c, ch) = b.channel().await;
    declare_durable(&ch, "deep2").await.unwrap();
    for i in 0..10_000u32 {
        publish(&ch, "", "deep2", &i.to_be_bytes()).await;
    }
    // Make sure the publishes were processed before purging.
    let n = passive(&ch, "deep2").await.unwrap().message_count();
    assert_eq!(n, 10_000);
    assert_eq!(
        ch.queue_purge("deep2".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        10_000
    );
    assert!(get_body(&ch, "deep2").await.is_none());
}
