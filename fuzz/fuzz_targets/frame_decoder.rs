//! The frame splitter on arbitrary bytes: it must return frames, ask for more, or
//! report a protocol error — never panic or loop.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    for _ in 0..=data.len() {
        match ferrymq_amqp::frame::next_frame(&mut buf, 131_072) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
