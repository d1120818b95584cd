//! Inputs the fuzz targets (fuzz/) turned up, kept as regression tests.

use ferrymq_amqp::{AmqpConfig, Shared, Transport};
use ferrymq_broker::Broker;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(out: &mut Vec<u8>, channel: u16, payload: &[u8]) {
    out.push(1);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
}

/// The method ids of every method frame in `data`.
fn methods(data: &[u8]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 7 <= data.len() {
        let size = u32::from_be_bytes(data[i + 3..i + 7].try_into().unwrap()) as usize;
        if data[i] == 1 && size >= 4 {
            let p = &data[i + 7..i + 7 + size];
            out.push((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ));
        }
        i += size + 8;
    }
    out
}

/// Found by the `connection` target: frames that arrived in the same read as the
/// protocol header waited for the next read, so a client that sends its whole
/// handshake at once (and then waits) hung.
#[tokio::test]
async fn a_handshake_sent_in_one_write_is_answered() {
    let shared = Shared::new(Broker::with_defaults(), AmqpConfig::default());
    let (client, server) = tokio::io::duplex(1 << 16);
    let addr = "127.0.0.1:5672".parse().unwrap();
    tokio::spawn(ferrymq_amqp::connection::serve(
        shared,
        server,
        addr,
        addr,
        Transport::default(),
    ));
    let mut input = b"AMQP\x00\x00\x09\x01".to_vec();
    let mut start_ok = vec![0, 10, 0, 11, 0, 0, 0, 0, 5];
    start_ok.extend_from_slice(b"PLAIN");
    start_ok.extend_from_slice(&12u32.to_be_bytes());
    start_ok.extend_from_slice(b"\0guest\0guest");
    start_ok.push(5);
    start_ok.extend_from_slice(b"en_US");
    frame(&mut input, 0, &start_ok);
    frame(&mut input, 0, &[0, 10, 0, 31, 0x07, 0xFF, 0, 2, 0, 0, 0, 0]);
    frame(&mut input, 0, &[0, 10, 0, 40, 1, b'/', 0, 0]);
    let (mut rd, mut wr) = tokio::io::split(client);
    wr.write_all(&input).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while !methods(&got).contains(&(10, 41)) {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", methods(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "no open-ok: {:?}", methods(&got));
    assert_eq!(methods(&got), vec![(10, 10), (10, 30), (10, 41)]);
}
