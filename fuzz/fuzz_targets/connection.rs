//! The whole AMQP connection state machine (method parsing, channel and queue
//! handling) on arbitrary frames sent after a valid handshake, against an
//! in-memory broker: the connection may close with an error, never panic or hang.
#![no_main]
use ferrymq_amqp::{AmqpConfig, Shared, Transport};
use ferrymq_broker::Broker;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Protocol header, start-ok (PLAIN guest/guest), tune-ok, open "/".
fn handshake() -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, payload: &[u8]) {
        out.push(1);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(0xCE);
    }
    let mut out = b"AMQP\x00\x00\x09\x01".to_vec();
    let mut start_ok = vec![0, 10, 0, 11, 0, 0, 0, 0]; // class, method, empty client properties
    start_ok.push(5);
    start_ok.extend_from_slice(b"PLAIN");
    let response = b"\0guest\0guest";
    start_ok.extend_from_slice(&(response.len() as u32).to_be_bytes());
    start_ok.extend_from_slice(response);
    start_ok.push(5);
    start_ok.extend_from_slice(b"en_US");
    frame(&mut out, &start_ok);
    frame(&mut out, &[0, 10, 0, 31, 0x07, 0xFF, 0, 2, 0, 0, 0, 0]);
    frame(&mut out, &[0, 10, 0, 40, 1, b'/', 0, 0]);
    out
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shared = Shared::new(
            Broker::with_defaults(),
            AmqpConfig {
                auth_failure_delay: Duration::ZERO,
                ..Default::default()
            },
        );
        let (client, server) = tokio::io::duplex(1 << 20);
        let addr = "127.0.0.1:5672".parse().unwrap();
        let conn = tokio::spawn(ferrymq_amqp::connection::serve(
            shared,
            server,
            addr,
            addr,
            Transport::default(),
        ));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut input = handshake();
        input.extend_from_slice(data);
        let _ = wr.write_all(&input).await;
        // End of input: the broker must finish what it read and hang up.
        let _ = wr.shutdown().await;
        let mut sink = vec![0u8; 1 << 16];
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "the connection did not close after its client's EOF"
        );
        // A panic inside the connection task surfaces here.
        match tokio::time::timeout(Duration::from_secs(5), conn).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(_) => {}
            Err(_) => panic!("the connection task did not end"),
        }
    });
});
