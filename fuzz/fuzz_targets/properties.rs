//! The hand-written property code on whatever a publisher can send: what
//! `Message::from_wire` accepts, the identity splice (`properties_with_header`) and
//! federation's `x-received-from` rewrite must handle without panicking, and their
//! output must be accepted again.
#![no_main]
use bytes::Bytes;
use ferrymq_broker::message::Message;
use ferrymq_federation::headers::{rewrite, Hop};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fn accepted(raw: &[u8]) -> bool {
    Message::from_wire(
        String::new(),
        String::new(),
        Bytes::copy_from_slice(raw),
        Bytes::new(),
        Instant::now(),
    )
    .is_some()
}

fuzz_target!(|data: &[u8]| {
    if !accepted(data) {
        return;
    }
    let mut out = Vec::new();
    ferrymq_amqp::wire::properties_with_header(data, "x-ferrymq-id", "7:42", &mut out);
    assert!(accepted(&out), "splice output not accepted: {out:?}");
    let hop = Hop {
        uri: "amqp://up:5672/%2F",
        queue: "q",
        redelivered: true,
        cluster_name: "up",
    };
    if let Some(r) = rewrite(data, "x-ferrymq-id", "ferrymq-id", &hop, |a, b| {
        a.or(b).map(str::to_owned)
    }) {
        assert!(accepted(&r.properties), "rewrite output not accepted");
    }
});
