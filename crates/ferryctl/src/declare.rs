//! `ferryctl declare`, `delete` and `link restart`: create or remove single
//! objects through the management API.

use crate::api::{enc, Api, Failure};
use crate::Conn;
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

/// Objects `declare` creates (or updates).
#[derive(Subcommand)]
pub enum DeclareCmd {
    /// A queue.
    Queue {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        /// Queue argument, e.g. x-max-length=1000 (values are JSON when they parse, else strings).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// An exchange.
    Exchange {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// direct, fanout, topic, headers, …
        #[arg(long = "type")]
        kind: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// A binding from an exchange to a queue or exchange.
    Binding {
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Source exchange.
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
        #[arg(long, value_enum, default_value = "queue")]
        destination_type: DestType,
        #[arg(long, default_value = "")]
        routing_key: String,
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// A virtual host.
    Vhost { name: String },
    /// A user.
    User {
        name: String,
        /// The new user's password (`--password` is the connection's).
        #[arg(long)]
        new_password: String,
        /// Comma-separated tags, e.g. administrator,management.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// A user's permissions in a vhost.
    Permission {
        /// The user granted the permissions (`--user` is the connection's).
        #[arg(value_name = "USER")]
        grantee: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        #[arg(long, default_value = ".*")]
        configure: String,
        #[arg(long, default_value = ".*")]
        write: String,
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// A policy.
    Policy {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Regular expression selecting queues and/or exchanges.
        #[arg(long)]
        pattern: String,
        /// Policy definition as a JSON object, e.g. '{"max-length": 1000}'.
        #[arg(long)]
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long, value_enum, default_value = "all")]
        apply_to: ApplyTo,
    },
    /// A federation upstream (`federation-upstream` parameter).
    Upstream {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// AMQP URI of the upstream broker.
        #[arg(long)]
        uri: String,
        /// Further upstream setting, e.g. ack-mode=on-confirm or prefetch-count=100.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// A federation upstream set (`federation-upstream-set` parameter).
    UpstreamSet {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// A member upstream; repeat for several.
        #[arg(long = "upstream", value_name = "NAME", required = true)]
        upstreams: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DestType {
    Queue,
    Exchange,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

/// Object kinds `delete` removes.
#[derive(Clone, Copy, ValueEnum)]
pub enum DeleteKind {
    Queue,
    Exchange,
    Vhost,
    User,
    Policy,
    OperatorPolicy,
    Upstream,
    UpstreamSet,
    /// A user's permissions in a vhost (the name is the user).
    Permission,
}

/// `link` subcommands.
#[derive(Subcommand)]
pub enum LinkCmd {
    /// Restart one federation link (its id as in `list links --json`).
    Restart {
        #[arg(long, default_value = "/")]
        vhost: String,
        id: String,
    },
}

/// `KEY=VALUE` pairs as a JSON object; values are JSON when they parse, else strings.
fn pairs(list: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for kv in list {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::Fatal(format!("expected KEY=VALUE, got '{kv}'")))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn api(conn: &Conn) -> Api {
    Api::new(&conn.url, &conn.user, &conn.password)
}

/// Runs one `declare` subcommand.
pub fn declare(conn: &Conn, cmd: &DeclareCmd) -> Result<(), Failure> {
    let (path, body, what) = match cmd {
        DeclareCmd::Queue {
            name,
            vhost,
            durable,
            args,
        } => (
            format!("/api/queues/{}/{}", enc(vhost), enc(name)),
            json!({"durable": durable, "auto_delete": false, "arguments": pairs(args)?}),
            format!("queue '{name}' in vhost '{vhost}'"),
        ),
        DeclareCmd::Exchange {
            name,
            vhost,
            kind,
            durable,
            args,
        } => (
            format!("/api/exchanges/{}/{}", enc(vhost), enc(name)),
            json!({"type": kind, "durable": durable, "auto_delete": false,
                   "internal": false, "arguments": pairs(args)?}),
            format!("exchange '{name}' in vhost '{vhost}'"),
        ),
        DeclareCmd::Binding {
            vhost,
            source,
            destination,
            destination_type,
            routing_key,
            args,
        } => {
            let t = match destination_type {
                DestType::Queue => "q",
                DestType::Exchange => "e",
            };
            let path = format!(
                "/api/bindings/{}/e/{}/{t}/{}",
                enc(vhost),
                enc(source),
                enc(destination)
            );
            let body = json!({"routing_key": routing_key, "arguments": pairs(args)?});
            api(conn).post(&path, &body)?;
            println!("declared binding '{source}' -> '{destination}' in vhost '{vhost}'");
            return Ok(());
        }
        DeclareCmd::Vhost { name } => (
            format!("/api/vhosts/{}", enc(name)),
            json!({}),
            format!("vhost '{name}'"),
        ),
        DeclareCmd::User {
            name,
            new_password,
            tags,
        } => (
            format!("/api/users/{}", enc(name)),
            json!({"password": new_password, "tags": tags}),
            format!("user '{name}'"),
        ),
        DeclareCmd::Permission {
            vhost,
            grantee: user,
            configure,
            write,
            read,
        } => (
            format!("/api/permissions/{}/{}", enc(vhost), enc(user)),
            json!({"configure": configure, "write": write, "read": read}),
            format!("permissions of '{user}' in vhost '{vhost}'"),
        ),
        DeclareCmd::Policy {
            name,
            vhost,
            pattern,
            definition,
            priority,
            apply_to,
        } => {
            let definition: Value = serde_json::from_str(definition)
                .map_err(|e| Failure::Fatal(format!("--definition is not JSON: {e}")))?;
            let apply_to = match apply_to {
                ApplyTo::Queues => "queues",
                ApplyTo::Exchanges => "exchanges",
                ApplyTo::All => "all",
            };
            (
                format!("/api/policies/{}/{}", enc(vhost), enc(name)),
                json!({"pattern": pattern, "definition": definition,
                       "priority": priority, "apply-to": apply_to}),
                format!("policy '{name}' in vhost '{vhost}'"),
            )
        }
        DeclareCmd::Upstream {
            name,
            vhost,
            uri,
            settings,
        } => {
            let mut value = pairs(settings)?;
            value.insert("uri".into(), Value::String(uri.clone()));
            (
                format!(
                    "/api/parameters/federation-upstream/{}/{}",
                    enc(vhost),
                    enc(name)
                ),
                json!({"value": value}),
                format!("upstream '{name}' in vhost '{vhost}'"),
            )
        }
        DeclareCmd::UpstreamSet {
            name,
            vhost,
            upstreams,
        } => {
            let members: Vec<Value> = upstreams.iter().map(|u| json!({"upstream": u})).collect();
            (
                format!(
                    "/api/parameters/federation-upstream-set/{}/{}",
                    enc(vhost),
                    enc(name)
                ),
                json!({"value": members}),
                format!("upstream set '{name}' in vhost '{vhost}'"),
            )
        }
    };
    api(conn).put(&path, &body)?;
    println!("declared {what}");
    Ok(())
}

/// Deletes one object.
pub fn delete(conn: &Conn, kind: DeleteKind, name: &str, vhost: &str) -> Result<(), Failure> {
    let (path, what) = match kind {
        DeleteKind::Queue => (format!("/api/queues/{}/{}", enc(vhost), enc(name)), "queue"),
        DeleteKind::Exchange => (
            format!("/api/exchanges/{}/{}", enc(vhost), enc(name)),
            "exchange",
        ),
        DeleteKind::Vhost => (format!("/api/vhosts/{}", enc(name)), "vhost"),
        DeleteKind::User => (format!("/api/users/{}", enc(name)), "user"),
        DeleteKind::Policy => (
            format!("/api/policies/{}/{}", enc(vhost), enc(name)),
            "policy",
        ),
        DeleteKind::Permission => (
            format!("/api/permissions/{}/{}", enc(vhost), enc(name)),
            "permissions of",
        ),
        DeleteKind::OperatorPolicy => (
            format!("/api/operator-policies/{}/{}", enc(vhost), enc(name)),
            "operator policy",
        ),
        DeleteKind::UpstreamSet => (
            format!(
                "/api/parameters/federation-upstream-set/{}/{}",
                enc(vhost),
                enc(name)
            ),
            "upstream set",
        ),
        DeleteKind::Upstream => (
            format!(
                "/api/parameters/federation-upstream/{}/{}",
                enc(vhost),
                enc(name)
            ),
            "upstream",
        ),
    };
    api(conn).delete(&path)?;
    println!("deleted {what} '{name}'");
    Ok(())
}

/// Runs one `link` subcommand.
pub fn link(conn: &Conn, cmd: &LinkCmd) -> Result<(), Failure> {
    match cmd {
        LinkCmd::Restart { vhost, id } => {
            api(conn).delete(&format!(
                "/api/federation-links/vhost/{}/{}/restart",
                enc(vhost),
                enc(id)
            ))?;
            println!("restarted link '{id}' in vhost '{vhost}'");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_json_values_or_strings() {
        let m = pairs(&["x-max-length=10".into(), "x-queue-type=quorum".into()]).unwrap();
        assert_eq!(m["x-max-length"], 10);
        assert_eq!(m["x-queue-type"], "quorum");
        assert!(pairs(&["novalue".into()]).is_err());
    }
}
