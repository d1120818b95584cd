//! The definitions importer on arbitrary JSON: an import either fails with a reason
//! or succeeds, and what it exports then imports again into a fresh broker.
#![no_main]
use ferrymq_broker::definitions::Definitions;
use ferrymq_broker::Broker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(defs) = serde_json::from_slice::<Definitions>(data) else {
        return;
    };
    let broker = Broker::new();
    if broker.import_definitions(&defs).is_err() {
        return;
    }
    let exported = broker.export_definitions(None, true);
    let again = Broker::new();
    if let Err(e) = again.import_definitions(&exported) {
        panic!("an export did not import again: {e}");
    }
});
