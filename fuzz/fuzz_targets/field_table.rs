//! Field tables as clients send them in queue.declare and basic.consume arguments:
//! decoding, then FerryMQ's interpretation of the x-arguments, must not panic.
#![no_main]
use amq_protocol::types::parsing::parse_field_table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, table)) = parse_field_table(data) {
        let _ = ferrymq_broker::queue_args::QueueArgs::parse(&table, "q", "/");
    }
});
