//! `ferryctl definitions`: export and import a broker's definitions in
//! RabbitMQ's JSON format (`/api/definitions[/{vhost}]`).

use crate::api::{Api, Failure};
use crate::{scoped, Conn};
use clap::Subcommand;
use serde_json::Value;

/// Definitions subcommands.
#[derive(Subcommand)]
pub enum DefinitionsCmd {
    /// Print the definitions as pretty JSON (or write them to a file).
    Export {
        /// Only this vhost's objects (RabbitMQ's vhost export format).
        #[arg(long)]
        vhost: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        file: Option<String>,
    },
    /// Import a definitions file (POST /api/definitions[/{vhost}]).
    Import {
        /// JSON file, as written by `export` or RabbitMQ.
        file: String,
        /// Import the file's queues, exchanges, bindings, policies and parameters into this vhost.
        #[arg(long)]
        vhost: Option<String>,
    },
}

/// The definition sections `copy-definitions` reports, in order.
pub const SECTIONS: [&str; 8] = [
    "users",
    "vhosts",
    "permissions",
    "queues",
    "exchanges",
    "bindings",
    "policies",
    "parameters",
];

/// "3 users, 1 vhosts, …" for a definitions document.
pub fn counts(doc: &Value) -> String {
    SECTIONS
        .iter()
        .map(|s| format!("{} {s}", doc[*s].as_array().map_or(0, Vec::len)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one definitions subcommand.
pub fn run(conn: &Conn, cmd: &DefinitionsCmd) -> Result<(), Failure> {
    let api = Api::new(&conn.url, &conn.user, &conn.password);
    match cmd {
        DefinitionsCmd::Export { vhost, file } => {
            let doc = api.get(&scoped("/api/definitions", vhost.as_deref()))?;
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
            match file {
                Some(f) => std::fs::write(f, text)
                    .map_err(|e| Failure::Fatal(format!("cannot write {f}: {e}"))),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        DefinitionsCmd::Import { file, vhost } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::Fatal(format!("cannot read {file}: {e}")))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::Fatal(format!("{file} is not JSON: {e}")))?;
            api.post(&scoped("/api/definitions", vhost.as_deref()), &doc)?;
            println!("imported {file}: {}", counts(&doc));
            Ok(())
        }
    }
}
