//! The durable message store: per-queue append-only segment files with
//! length + CRC32C framing, an ack log, recovery, and group-commit fsync.
//!
//! Layout under the data dir: `queues/<id>/seg-<n>.seg` holds records (`.dat`:
//! written before segment files were reused), `queues/<id>/acks.log` holds
//! 9-byte entries (`A` acked, `D` delivered) naming a record by (segment, offset),
//! and runs of `S` (a segment number) then `I` entries: identities of federated
//! messages whose segment is gone (a record carries its own identity while its
//! segment exists). A segment whose records are all acked
//! is deleted, or kept as the queue's next segment. Only persistent messages wait for fsync before their confirm;
//! the same durability point ([`Durability::synced_epoch`]) is exposed to
//! internal callers such as federation links.

mod durability;
mod queue_store;
mod record;

pub use durability::Durability;
pub use queue_store::{QueueStore, Recovered, RecoveryReport};
pub use record::Loc;

/// Target size of one segment file; a bigger message gets a segment of its own.
pub const SEGMENT_SIZE: u64 = 8 << 20;
