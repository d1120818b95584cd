//! `ferryctl`: lists, declares and deletes broker objects, exports and imports
//! definitions through the RabbitMQ-compatible management
//! HTTP API and drives a queue migration by federation (set up, watch, and
//! check that the old broker can be decommissioned).
//!
//! Exit codes: 0 success, 1 a check failed or the broker refused the
//! operation, 2 usage, connection or login errors.

mod api;
mod declare;
mod definitions;
mod migrate;
mod table;

use api::{enc, Api, Failure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// Command-line client for FerryMQ's management HTTP API.
#[derive(Parser)]
#[command(name = "ferryctl", version, about)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Command,
}

/// Connection options, accepted by every command.
#[derive(Args, Clone)]
pub struct Conn {
    /// Management API base URL.
    #[arg(
        long,
        global = true,
        env = "FERRYCTL_URL",
        default_value = "http://localhost:15672"
    )]
    pub url: String,
    /// User for HTTP basic auth.
    #[arg(long, global = true, env = "FERRYCTL_USER", default_value = "guest")]
    pub user: String,
    /// Password for HTTP basic auth.
    #[arg(
        long,
        global = true,
        env = "FERRYCTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub password: String,
    /// Print the raw JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List objects of one kind.
    List {
        /// What to list.
        what: Kind,
        /// Only this vhost (ignored for vhosts and users).
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Create or update one object.
    #[command(subcommand)]
    Declare(declare::DeclareCmd),
    /// Delete one object.
    Delete {
        /// What to delete.
        what: declare::DeleteKind,
        /// Its name.
        name: String,
        /// Its vhost (ignored for vhosts and users).
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Federation links.
    #[command(subcommand)]
    Link(declare::LinkCmd),
    /// Export or import definitions (`/api/definitions`).
    #[command(subcommand)]
    Definitions(definitions::DefinitionsCmd),
    /// Migrate queues from an old broker by federation.
    #[command(subcommand)]
    Migrate(migrate::MigrateCmd),
}

/// The object kinds `list` knows.
#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Queues,
    Exchanges,
    Bindings,
    Vhosts,
    Users,
    Policies,
    Upstreams,
    Links,
}

impl Kind {
    /// API path (without vhost) and whether it can be narrowed to a vhost.
    fn path(self) -> (&'static str, bool) {
        match self {
            Kind::Queues => ("/api/queues", true),
            Kind::Exchanges => ("/api/exchanges", true),
            Kind::Bindings => ("/api/bindings", true),
            Kind::Vhosts => ("/api/vhosts", false),
            Kind::Users => ("/api/users", false),
            Kind::Policies => ("/api/policies", true),
            Kind::Upstreams => ("/api/parameters/federation-upstream", true),
            Kind::Links => ("/api/federation-links", true),
        }
    }

    /// Table columns: header and dotted JSON field.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Queues => &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("messages", "messages"),
                ("consumers", "consumers"),
                ("policy", "policy"),
            ],
            Kind::Exchanges => &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("type", "type"),
                ("durable", "durable"),
                ("auto_delete", "auto_delete"),
            ],
            Kind::Bindings => &[
                ("vhost", "vhost"),
                ("source", "source"),
                ("destination", "destination"),
                ("type", "destination_type"),
                ("routing_key", "routing_key"),
            ],
            Kind::Vhosts => &[("name", "name"), ("description", "description")],
            Kind::Users => &[("name", "name"), ("tags", "tags")],
            Kind::Policies => &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("pattern", "pattern"),
                ("apply-to", "apply-to"),
                ("priority", "priority"),
                ("definition", "definition"),
            ],
            Kind::Upstreams => &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("uri", "value.uri"),
                ("ack-mode", "value.ack-mode"),
            ],
            Kind::Links => &[
                ("vhost", "vhost"),
                ("queue", "queue"),
                ("upstream", "upstream"),
                ("status", "status"),
                ("transferred", "messages_transferred"),
                ("error", "error"),
            ],
        }
    }
}

/// `path` narrowed to `vhost` when one is given.
pub fn scoped(path: &str, vhost: Option<&str>) -> String {
    match vhost {
        Some(v) => format!("{path}/{}", enc(v)),
        None => path.to_string(),
    }
}

/// The items of a list answer (a plain array, or RabbitMQ's paged `items`).
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn list(conn: &Conn, what: Kind, vhost: Option<&str>) -> Result<(), Failure> {
    let api = Api::new(&conn.url, &conn.user, &conn.password);
    let (path, per_vhost) = what.path();
    let path = scoped(path, vhost.filter(|_| per_vhost));
    let answer = api.get(&path)?;
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        print!("{}", table::render_json(what.columns(), &items(answer)));
    }
    Ok(())
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match &cli.command {
        Command::List { what, vhost } => list(&cli.conn, *what, vhost.as_deref()),
        Command::Declare(cmd) => declare::declare(&cli.conn, cmd),
        Command::Delete { what, name, vhost } => declare::delete(&cli.conn, *what, name, vhost),
        Command::Link(cmd) => declare::link(&cli.conn, cmd),
        Command::Definitions(cmd) => definitions::run(&cli.conn, cmd),
        Command::Migrate(cmd) => migrate::run(&cli.conn, cmd),
    };
    if let Err(e) = result {
        eprintln!("ferryctl: {e}");
        std::process::exit(e.exit_code());
    }
}
