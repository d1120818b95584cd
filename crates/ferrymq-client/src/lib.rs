//! A lean AMQP 0-9-1 client. Setup traffic goes through amq-protocol's codec;
//! the hot paths (publishing, consuming) work on raw frames in large buffers, so
//! the client costs a small fraction of a broker's CPU per message. ferryperf
//! drives benchmarks with it and federation links consume from upstreams with it.

pub mod connection;
pub mod tls;
pub mod uri;

pub use connection::*;
pub use uri::AmqpUri;
