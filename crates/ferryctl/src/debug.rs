//! `ferryctl publish` and `ferryctl get`: send or peek at single messages through
//! the management API, as `rabbitmqadmin publish` / `get` do, for debugging.

use crate::api::{enc, Api, Failure};
use crate::table::cell;
use crate::Conn;
use clap::Args;
use serde_json::{json, Map, Value};

/// Options of `ferryctl publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// Message body; `-` reads it from stdin.
    body: String,
    /// Exchange to publish to (default: the default exchange, routing to a queue by name).
    #[arg(long, default_value = "")]
    exchange: String,
    /// Routing key (for the default exchange: the queue name).
    #[arg(long, default_value = "")]
    routing_key: String,
    /// Vhost.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// Mark the message persistent (delivery mode 2).
    #[arg(long)]
    persistent: bool,
    /// A message property, e.g. message_id=abc or content_type=application/json.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// A header, e.g. x-trace=abc.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
}

/// Options of `ferryctl get`.
#[derive(Args)]
pub struct GetArgs {
    /// Queue to read from.
    queue: String,
    /// Vhost.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// How many messages.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Acknowledge (remove) the messages instead of requeueing them.
    #[arg(long)]
    ack: bool,
}

fn key_values(list: &[String], what: &str) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for item in list {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| Failure::Fatal(format!("{what} '{item}' is not KEY=VALUE")))?;
        out.insert(k.to_string(), Value::from(v));
    }
    Ok(out)
}

/// Publishes one message; exit 1 when no queue took it.
pub fn publish(conn: &Conn, args: &PublishArgs) -> Result<(), Failure> {
    let body = if args.body == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::Fatal(format!("reading the body from stdin: {e}")))?
    } else {
        args.body.clone()
    };
    let mut properties = key_values(&args.properties, "property")?;
    // Numeric properties travel as numbers, as the API expects.
    for key in ["delivery_mode", "priority", "timestamp"] {
        if let Some(n) = properties
            .get(key)
            .and_then(|v| v.as_str()?.parse::<u64>().ok())
        {
            properties.insert(key.into(), n.into());
        }
    }
    if args.persistent {
        properties.insert("delivery_mode".into(), 2.into());
    }
    let headers = key_values(&args.headers, "header")?;
    if !headers.is_empty() {
        properties.insert("headers".into(), Value::Object(headers));
    }
    let exchange = if args.exchange.is_empty() {
        "amq.default"
    } else {
        &args.exchange
    };
    let api = Api::new(&conn.url, &conn.user, &conn.password);
    let answer = api.post(
        &format!(
            "/api/exchanges/{}/{}/publish",
            enc(&args.vhost),
            enc(exchange)
        ),
        &json!({
            "routing_key": args.routing_key,
            "payload": body,
            "payload_encoding": "string",
            "properties": properties,
        }),
    )?;
    if conn.json {
        println!("{answer}");
    }
    if answer["routed"] == true {
        if !conn.json {
            println!("published to exchange '{exchange}' and routed");
        }
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "published to exchange '{exchange}' with routing key '{}', but no queue was bound to take it",
            args.routing_key
        )))
    }
}

/// Fetches messages (requeued unless `--ack`).
pub fn get(conn: &Conn, args: &GetArgs) -> Result<(), Failure> {
    if args.count == 0 {
        return Err(Failure::Fatal("--count must be at least 1".into()));
    }
    let api = Api::new(&conn.url, &conn.user, &conn.password);
    let ackmode = if args.ack {
        "ack_requeue_false"
    } else {
        "ack_requeue_true"
    };
    let answer = api.post(
        &format!("/api/queues/{}/{}/get", enc(&args.vhost), enc(&args.queue)),
        &json!({"count": args.count, "ackmode": ackmode, "encoding": "auto"}),
    )?;
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
        return Ok(());
    }
    let list = crate::items(answer);
    if list.is_empty() {
        println!("queue '{}' is empty", args.queue);
    }
    for (i, m) in list.iter().enumerate() {
        println!(
            "message {}: exchange '{}', routing key '{}'{}, {} left in queue",
            i + 1,
            cell(&m["exchange"]),
            cell(&m["routing_key"]),
            if m["redelivered"] == true {
                ", redelivered"
            } else {
                ""
            },
            cell(&m["message_count"])
        );
        if let Some(props) = m["properties"].as_object().filter(|p| !p.is_empty()) {
            println!("  properties: {}", Value::Object(props.clone()));
        }
        println!(
            "  payload ({} bytes, {}): {}",
            cell(&m["payload_bytes"]),
            cell(&m["payload_encoding"]),
            cell(&m["payload"])
        );
    }
    Ok(())
}
