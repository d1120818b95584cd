//! FerryMQ's AMQP 0-9-1 server: framing with limits, the connection and channel
//! state machines, and the mapping of methods onto the broker domain.
//!
//! Data flow: [`connection`] splits frames ([`frame`]) and hands methods and
//! content to a [`channel`]; publishes route through the domain into queues,
//! which deliver through a channel's [`delivery`] sink into the consumer
//! connection's [`outbound`] buffer.

pub mod channel;
pub mod connection;
pub mod delivery;
pub mod frame;
pub mod methods;
pub mod outbound;
pub mod sasl;
pub mod server;
pub mod wire;

pub use server::{serve, AmqpConfig, Shared, Transport};
