//! `ferryctl`: lists, declares and deletes broker objects, exports and imports
//! definitions through the RabbitMQ-compatible management
//! HTTP API and drives a queue migration by federation (set up, watch, and
//! check that the old broker can be decommissioned).
//!
//! Exit codes: 0 success, 1 a check failed or the broker refused the
//! operation, 2 usage, connection or login errors.

mod api;
mod config;
mod debug;
mod declare;
mod definitions;
mod migrate;
mod progress;
mod table;

use api::{enc, Api, Failure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

const EXAMPLES: &str = "\
Examples:
  ferryctl list queues --vhost /
  ferryctl declare queue orders --arg x-max-length=100000
  ferryctl publish --exchange amq.direct --routing-key orders 'hello'
  ferryctl get orders --count 5
  ferryctl definitions export > backup.json
  ferryctl migrate plan --from http://old:15672 --pattern '^orders\\.'
  ferryctl migrate federate --from amqp://user:pass@old:5672/%2F --pattern '^orders\\.'
  ferryctl migrate status --watch 2
  ferryctl migrate check-decommission --from http://old:15672

Connection settings come from --url/--user/--password, FERRYCTL_URL/FERRYCTL_USER/
FERRYCTL_PASSWORD, or a config file (--config, default ~/.config/ferryctl/config.toml)
with the keys url, user, password and cacert (CA file for https:// URLs). Exit codes: 0 success; 1 the broker refused or a
check failed; 2 usage, connection or login error.";

/// Command-line client for FerryMQ's management HTTP API.
#[derive(Parser)]
#[command(name = "ferryctl", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

/// Connection options as given on the command line or in the environment.
#[derive(Args, Clone)]
struct ConnArgs {
    /// Management API base URL [default: http://localhost:15672].
    #[arg(long, global = true, env = "FERRYCTL_URL")]
    url: Option<String>,
    /// User for HTTP basic auth [default: guest].
    #[arg(long, global = true, env = "FERRYCTL_USER")]
    user: Option<String>,
    /// Password for HTTP basic auth [default: guest].
    #[arg(long, global = true, env = "FERRYCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Config file with url, user and password [default: ~/.config/ferryctl/config.toml if present].
    #[arg(long, global = true, env = "FERRYCTL_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// CA certificates (PEM) to trust for https:// URLs [default: the bundled web roots].
    #[arg(long, global = true, env = "FERRYCTL_CACERT", value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// Resolved connection settings: flags and environment, then the config file, then defaults.
#[derive(Clone)]
pub struct Conn {
    /// Management API base URL.
    pub url: String,
    /// User for HTTP basic auth.
    pub user: String,
    /// Password for HTTP basic auth.
    pub password: String,
    /// Print the raw JSON instead of a table.
    pub json: bool,
}

impl ConnArgs {
    fn resolve(&self) -> Result<Conn, Failure> {
        let file = config::load(self.config.as_deref())?;
        let pick = |given: &Option<String>, key: &str, default: &str| {
            given
                .clone()
                .or_else(|| file.get(key).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let cacert = self
            .cacert
            .clone()
            .or_else(|| file.get("cacert").map(std::path::PathBuf::from));
        if let Some(path) = cacert {
            api::trust_ca_file(&path)?;
        }
        Ok(Conn {
            url: pick(&self.url, "url", "http://localhost:15672"),
            user: pick(&self.user, "user", "guest"),
            password: pick(&self.password, "password", "guest"),
            json: self.json,
        })
    }
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
    /// Publish one message through an exchange (for debugging).
    Publish(debug::PublishArgs),
    /// Fetch messages from a queue (for debugging); they are requeued unless --ack.
    Get(debug::GetArgs),
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
    OperatorPolicies,
    Upstreams,
    UpstreamSets,
    Links,
    Permissions,
    Connections,
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
            Kind::OperatorPolicies => ("/api/operator-policies", true),
            Kind::Upstreams => ("/api/parameters/federation-upstream", true),
            Kind::UpstreamSets => ("/api/parameters/federation-upstream-set", true),
            Kind::Links => ("/api/federation-links", true),
            Kind::Permissions => ("/api/permissions", false),
            Kind::Connections => ("/api/connections", false),
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
            Kind::Policies | Kind::OperatorPolicies => &[
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
            Kind::UpstreamSets => &[("vhost", "vhost"), ("name", "name"), ("upstreams", "value")],
            Kind::Permissions => &[
                ("user", "user"),
                ("vhost", "vhost"),
                ("configure", "configure"),
                ("write", "write"),
                ("read", "read"),
            ],
            Kind::Connections => &[
                ("name", "name"),
                ("user", "user"),
                ("vhost", "vhost"),
                ("channels", "channels"),
                ("state", "state"),
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
    let result = cli.conn.resolve().and_then(|conn| match &cli.command {
        Command::List { what, vhost } => list(&conn, *what, vhost.as_deref()),
        Command::Declare(cmd) => declare::declare(&conn, cmd),
        Command::Delete { what, name, vhost } => declare::delete(&conn, *what, name, vhost),
        Command::Link(cmd) => declare::link(&conn, cmd),
        Command::Publish(args) => debug::publish(&conn, args),
        Command::Get(args) => debug::get(&conn, args),
        Command::Definitions(cmd) => definitions::run(&conn, cmd),
        Command::Migrate(cmd) => migrate::run(&conn, cmd),
    });
    if let Err(e) = result {
        eprintln!("ferryctl: {e}");
        std::process::exit(e.exit_code());
    }
}
