//! `ferryctl migrate`: move queues from an old broker to a new FerryMQ by
//! federation — set it up, watch it, and decide when the old one can go.

use crate::api::{enc, one_line, Api, Failure};
use crate::table::{cell, field};
use crate::{items, scoped, Conn};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Migration subcommands.
#[derive(Subcommand)]
pub enum MigrateCmd {
    /// Exit 0 only if no federated queue still depends on the old broker.
    CheckDecommission {
        #[command(flatten)]
        from: Source,
        #[command(flatten)]
        to: Target,
        /// Only links of this vhost.
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Copy all definitions (users, vhosts, permissions, queues, exchanges,
    /// bindings, policies, parameters) from the old broker to the new one.
    CopyDefinitions {
        #[command(flatten)]
        from: Source,
        #[command(flatten)]
        to: Target,
        /// Only report what would be copied.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare both brokers' definitions: print what the new one lacks and
    /// which old queues match the pattern (and so will be federated).
    Plan {
        #[command(flatten)]
        from: Source,
        #[command(flatten)]
        to: Target,
        /// Only this vhost (users are always compared).
        #[arg(long)]
        vhost: Option<String>,
        /// Regular expression selecting the queues to federate.
        #[arg(long)]
        pattern: Option<String>,
    },
    /// Create a federation upstream and a policy federating matching queues, then
    /// wait until their links are up.
    Federate {
        #[command(flatten)]
        to: Target,
        /// AMQP URI of the old broker, e.g. amqp://user:pass@old:5672/%2F.
        #[arg(long, alias = "from", value_name = "AMQP_URI")]
        upstream_uri: String,
        /// Regular expression selecting the queues to federate.
        #[arg(long)]
        pattern: String,
        /// Upstream name; the policy is named `migrate-<name>`.
        #[arg(long, default_value = "old")]
        name: String,
        /// Vhost on the new broker.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Seconds to wait for the links of matching queues to come up.
        #[arg(long, default_value_t = 15, value_name = "SECS")]
        wait: u64,
        /// Set up federation even if no queue on the new broker matches yet (links
        /// start when matching queues are declared).
        #[arg(long)]
        lazy: bool,
    },
    /// Progress per federated queue: what is left upstream, both sides' consumers
    /// and arrivals, link state, transfer rate, and the phase reached.
    Status {
        #[command(flatten)]
        to: Target,
        /// Redraw every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// Keep refreshing until every federated queue is drained, then exit 0
        /// (exit 1 after --timeout).
        #[arg(long)]
        until_drained: bool,
        /// Give up --until-drained after SECS seconds.
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        timeout: u64,
    },
}

/// The old (upstream) broker; its credentials default to the global ones.
#[derive(clap::Args)]
pub struct Source {
    /// Management API of the old broker (RabbitMQ or FerryMQ).
    #[arg(long)]
    from: String,
    /// User on the old broker (default: --user).
    #[arg(long)]
    from_user: Option<String>,
    /// Password on the old broker (default: --password).
    #[arg(long)]
    from_password: Option<String>,
}

impl Source {
    fn api(&self, conn: &Conn) -> Api {
        Api::new(
            &self.from,
            self.from_user.as_deref().unwrap_or(&conn.user),
            self.from_password.as_deref().unwrap_or(&conn.password),
        )
    }
}

/// The new (downstream) broker; defaults to the global connection options.
#[derive(clap::Args)]
pub struct Target {
    /// Management API of the new FerryMQ broker (default: --url).
    #[arg(long)]
    to: Option<String>,
    /// User on the new broker (default: --user).
    #[arg(long)]
    to_user: Option<String>,
    /// Password on the new broker (default: --password).
    #[arg(long)]
    to_password: Option<String>,
}

impl Target {
    fn api(&self, conn: &Conn) -> Api {
        Api::new(
            self.to.as_deref().unwrap_or(&conn.url),
            self.to_user.as_deref().unwrap_or(&conn.user),
            self.to_password.as_deref().unwrap_or(&conn.password),
        )
    }
}

/// Runs one migration subcommand.
pub fn run(conn: &Conn, cmd: &MigrateCmd) -> Result<(), Failure> {
    match cmd {
        MigrateCmd::CheckDecommission { from, to, vhost } => {
            let old = from.api(conn);
            check_decommission(conn, &old, &to.api(conn), vhost.as_deref())
        }
        MigrateCmd::CopyDefinitions { from, to, dry_run } => {
            let old = from.api(conn);
            copy_definitions(&old, &to.api(conn), *dry_run)
        }
        MigrateCmd::Plan {
            from,
            to,
            vhost,
            pattern,
        } => {
            let old = from.api(conn);
            plan(&old, &to.api(conn), vhost.as_deref(), pattern.as_deref())
        }
        MigrateCmd::Federate {
            to,
            upstream_uri,
            pattern,
            name,
            vhost,
            wait,
            lazy,
        } => {
            let setup = FederateSetup {
                uri: upstream_uri,
                pattern,
                name,
                vhost,
                wait: Duration::from_secs(*wait),
                lazy: *lazy,
            };
            federate(conn, &to.api(conn), &setup)
        }
        MigrateCmd::Status {
            to,
            watch,
            until_drained,
            timeout,
        } => crate::progress::run(
            conn,
            &to.api(conn),
            *watch,
            until_drained.then(|| Duration::from_secs(*timeout)),
        ),
    }
}

/// GET the old broker's definitions and POST them to the new one. Importing
/// is idempotent: objects that already exist with the same settings stay as they are.
fn copy_definitions(old: &Api, new: &Api, dry_run: bool) -> Result<(), Failure> {
    let doc = old.get("/api/definitions")?;
    if !doc.is_object() {
        return Err(Failure::Refused(format!(
            "{} answered no definitions document",
            old.url()
        )));
    }
    let counts = crate::definitions::counts(&doc);
    if dry_run {
        println!("would copy from {} to {}: {counts}", old.url(), new.url());
        return Ok(());
    }
    new.post("/api/definitions", &doc)?;
    println!("copied from {} to {}: {counts}", old.url(), new.url());
    Ok(())
}

/// The definition kinds `plan` compares: section, label, key fields.
const PLAN_KINDS: [(&str, &str, &[&str]); 6] = [
    ("vhosts", "vhost", &["name"]),
    ("users", "user", &["name"]),
    ("exchanges", "exchange", &["vhost", "name"]),
    ("queues", "queue", &["vhost", "name"]),
    (
        "bindings",
        "binding",
        &[
            "vhost",
            "source",
            "destination",
            "destination_type",
            "routing_key",
        ],
    ),
    ("policies", "policy", &["vhost", "name"]),
];

/// The key of one definition: its key fields as text.
fn def_key(item: &Value, fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| cell(&item[*f])).collect()
}

/// Whether a definition belongs to `vhost` (vhosts by name, users always).
fn in_vhost(section: &str, item: &Value, vhost: Option<&str>) -> bool {
    match (vhost, section) {
        (None, _) | (_, "users") => true,
        (Some(v), "vhosts") => item["name"] == v,
        (Some(v), _) => item["vhost"] == v,
    }
}

fn plan(old: &Api, new: &Api, vhost: Option<&str>, pattern: Option<&str>) -> Result<(), Failure> {
    let re = pattern
        .map(|p| {
            regex::Regex::new(p).map_err(|e| {
                Failure::Fatal(format!("invalid --pattern: {}", one_line(&e.to_string())))
            })
        })
        .transpose()?;
    let before = old.get("/api/definitions")?;
    let after = new.get("/api/definitions")?;
    let mut missing = 0;
    println!("missing on {}:", new.url());
    for (section, label, fields) in PLAN_KINDS {
        let have: std::collections::HashSet<Vec<String>> = items(after[section].clone())
            .iter()
            .map(|i| def_key(i, fields))
            .collect();
        for item in items(before[section].clone()) {
            if !in_vhost(section, &item, vhost) {
                continue;
            }
            let key = def_key(&item, fields);
            if !have.contains(&key) {
                missing += 1;
                println!("  {label:<9}{}", key.join("  "));
            }
        }
    }
    if missing == 0 {
        println!("  nothing");
    }
    if let Some(re) = re {
        println!("queues to federate (pattern {}):", re.as_str());
        let mut n = 0;
        for q in items(before["queues"].clone()) {
            let name = q["name"].as_str().unwrap_or_default();
            if in_vhost("queues", &q, vhost) && re.is_match(name) {
                n += 1;
                println!("  {}  {name}", cell(&q["vhost"]));
            }
        }
        if n == 0 {
            println!("  none");
            return Err(Failure::Refused(format!(
                "pattern '{}' matches no queue on {}: nothing would be federated",
                re.as_str(),
                old.url()
            )));
        }
    }
    Ok(())
}

/// The vhost named by an AMQP URI's path (`/` when it has none), as RabbitMQ reads it.
fn uri_vhost(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hides the password of `amqp://user:pass@host` for printing.
fn mask(uri: &str) -> String {
    match (uri.find("://"), uri.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &uri[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..s + 3], &uri[at..])
        }
        _ => uri.to_string(),
    }
}

/// One federated queue's verdict.
struct Verdict {
    report: Value,
    blocked: bool,
}

fn check_decommission(
    conn: &Conn,
    old: &Api,
    new: &Api,
    vhost: Option<&str>,
) -> Result<(), Failure> {
    let links = items(new.get(&scoped("/api/federation-links", vhost))?);
    let upstreams: HashMap<(String, String), Value> =
        items(new.get(&scoped("/api/parameters/federation-upstream", vhost))?)
            .into_iter()
            .map(|u| ((cell(&u["vhost"]), cell(&u["name"])), u["value"].clone()))
            .collect();
    // Consumers per old vhost, fetched once each.
    let mut consumers: HashMap<String, Vec<Value>> = HashMap::new();
    let mut verdicts = Vec::new();
    for link in links
        .iter()
        .filter(|l| l["type"].as_str().unwrap_or("queue") == "queue")
    {
        let (lvhost, queue, upstream) = (
            cell(&link["vhost"]),
            cell(&link["queue"]),
            cell(&link["upstream"]),
        );
        let config = upstreams
            .get(&(lvhost.clone(), upstream.clone()))
            .cloned()
            .unwrap_or(Value::Null);
        let upstream_queue = link["upstream_queue"]
            .as_str()
            .or(config["queue"].as_str())
            .unwrap_or(&queue)
            .to_string();
        let uri = match &config["uri"] {
            Value::Array(a) => a.first().map(cell).unwrap_or_default(),
            other => cell(other),
        };
        let old_vhost = if uri.is_empty() {
            lvhost.clone()
        } else {
            uri_vhost(&uri)
        };
        let own_tag = config["consumer-tag"].as_str().map(str::to_string);
        if !consumers.contains_key(&old_vhost) {
            let list = items(old.get(&format!("/api/consumers/{}", enc(&old_vhost)))?);
            consumers.insert(old_vhost.clone(), list);
        }
        let others: Vec<String> = consumers[&old_vhost]
            .iter()
            .filter(|c| {
                cell(field(c, "queue.name")) == upstream_queue
                    && cell(field(c, "queue.vhost")) == old_vhost
            })
            .map(|c| cell(&c["consumer_tag"]))
            // The federation link's own consumer is expected; anything else still reads the old queue.
            .filter(|tag| !tag.starts_with("federation-link-") && Some(tag) != own_tag.as_ref())
            .collect();
        let q = old.get_opt(&format!(
            "/api/queues/{}/{}",
            enc(&old_vhost),
            enc(&upstream_queue)
        ))?;
        let mut reasons = Vec::new();
        let (messages, rate) = match &q {
            Some(q) => (
                q["messages"].as_u64().unwrap_or(0),
                field(q, "message_stats.publish_details.rate")
                    .as_f64()
                    .unwrap_or(0.0),
            ),
            None => (0, 0.0),
        };
        if messages > 0 {
            let plural = if messages == 1 { "" } else { "s" };
            reasons.push(format!("{messages} message{plural} still upstream"));
        }
        if rate > 0.0 {
            reasons.push(format!("still published to upstream ({rate:.1}/s)"));
        } else if let Some(seen) = link["upstream_inflow_rate"].as_f64().filter(|r| *r > 0.0) {
            // The link's own probe sees arrivals sooner than the old broker's 5 s statistics.
            reasons.push(format!(
                "messages still arriving upstream ({seen:.1}/s, seen by the link)"
            ));
        }
        if !others.is_empty() {
            reasons.push(format!(
                "{} consumer(s) on upstream: {}",
                others.len(),
                others.join(",")
            ));
        }
        let blocked = !reasons.is_empty();
        verdicts.push(Verdict {
            report: json!({
                "vhost": lvhost,
                "queue": queue,
                "upstream": upstream,
                "upstream_vhost": old_vhost,
                "upstream_queue": upstream_queue,
                "upstream_queue_exists": q.is_some(),
                "messages": messages,
                "publish_rate": rate,
                "other_consumers": others,
                "verdict": if blocked { "blocked" } else { "ok" },
                "reasons": reasons,
            }),
            blocked,
        });
    }
    let blocked = verdicts.iter().filter(|v| v.blocked).count();
    if conn.json {
        let all: Vec<&Value> = verdicts.iter().map(|v| &v.report).collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        if verdicts.is_empty() {
            println!(
                "no federation links on {}: nothing depends on {}",
                new.url(),
                old.url()
            );
        }
        for v in &verdicts {
            let r = &v.report;
            let what = format!(
                "queue '{}' in vhost '{}' (upstream '{}': queue '{}' in vhost '{}')",
                cell(&r["queue"]),
                cell(&r["vhost"]),
                cell(&r["upstream"]),
                cell(&r["upstream_queue"]),
                cell(&r["upstream_vhost"])
            );
            if v.blocked {
                let reasons: Vec<String> = items(r["reasons"].clone()).iter().map(cell).collect();
                println!("BLOCKED  {what}: {}", reasons.join("; "));
            } else if r["upstream_queue_exists"] == true {
                println!("OK       {what}: empty, no publishers, no other consumers");
            } else {
                println!("OK       {what}: upstream queue does not exist");
            }
        }
    }
    if blocked > 0 {
        return Err(Failure::Refused(format!(
            "{blocked} of {} federated queue(s) still depend on {}",
            verdicts.len(),
            old.url()
        )));
    }
    Ok(())
}

/// What `migrate federate` sets up.
struct FederateSetup<'a> {
    uri: &'a str,
    pattern: &'a str,
    name: &'a str,
    vhost: &'a str,
    wait: Duration,
    lazy: bool,
}

fn federate(conn: &Conn, new: &Api, setup: &FederateSetup<'_>) -> Result<(), Failure> {
    let FederateSetup {
        uri,
        pattern,
        name,
        vhost,
        ..
    } = *setup;
    let re = regex::Regex::new(pattern)
        .map_err(|e| Failure::Fatal(format!("invalid --pattern: {}", one_line(&e.to_string()))))?;
    if !uri.starts_with("amqp://") && !uri.starts_with("amqps://") {
        return Err(Failure::Fatal(format!(
            "--from must be an AMQP URI (amqp://user:pass@host:5672/vhost), not '{}'",
            mask(uri)
        )));
    }
    // The queues this will federate: the ones already declared on the new broker.
    let matching: Vec<String> = items(new.get(&format!("/api/queues/{}", enc(vhost)))?)
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| re.is_match(n))
        .map(str::to_string)
        .collect();
    if matching.is_empty() && !setup.lazy {
        return Err(Failure::Refused(format!(
            "pattern '{pattern}' matches no queue in vhost '{vhost}' on {}: copy the definitions \
             first (migrate copy-definitions) or pass --lazy to federate queues declared later",
            new.url()
        )));
    }
    let upstream_path = format!(
        "/api/parameters/federation-upstream/{}/{}",
        enc(vhost),
        enc(name)
    );
    new.put(&upstream_path, &json!({"value": {"uri": uri}}))?;
    let policy_name = format!("migrate-{name}");
    let policy_path = format!("/api/policies/{}/{}", enc(vhost), enc(&policy_name));
    let policy = json!({
        "pattern": pattern,
        "definition": {"federation-upstream": name},
        "apply-to": "queues",
    });
    new.put(&policy_path, &policy)?;
    if !conn.json {
        println!(
            "upstream '{name}' in vhost '{vhost}' -> {} (on {})",
            mask(uri),
            new.url()
        );
        println!(
            "policy '{policy_name}' in vhost '{vhost}': queues matching '{pattern}' federate from '{name}'"
        );
    }
    // Verify: every matching queue gets a link that reaches the upstream.
    let deadline = Instant::now() + setup.wait;
    let links = loop {
        let links: Vec<Value> = items(new.get(&format!("/api/federation-links/{}", enc(vhost)))?)
            .into_iter()
            .filter(|l| l["upstream"] == name && matching.iter().any(|q| l["queue"] == q.as_str()))
            .collect();
        let up = |l: &Value| matches!(l["status"].as_str(), Some("running" | "paused"));
        if (links.len() == matching.len() && links.iter().all(up)) || Instant::now() >= deadline {
            break links;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let failing: Vec<String> = matching
        .iter()
        .filter_map(|q| {
            let link = links.iter().find(|l| l["queue"] == q.as_str());
            match link.and_then(|l| l["status"].as_str()) {
                Some("running" | "paused") => None,
                Some(state) => Some(format!(
                    "{q}: {state}{}",
                    link.and_then(|l| l["error"].as_str())
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )),
                None => Some(format!("{q}: no link")),
            }
        })
        .collect();
    if conn.json {
        let out = json!({
            "upstream": {"vhost": vhost, "name": name, "value": {"uri": mask(uri)}},
            "policy": {"vhost": vhost, "name": policy_name, "pattern": pattern,
                       "definition": policy["definition"], "apply-to": "queues"},
            "links": links,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if matching.is_empty() {
        println!("no queue matches yet: links start once matching queues exist on the new broker");
    } else {
        for l in &links {
            println!("link {}: {}", cell(&l["queue"]), cell(&l["status"]));
        }
    }
    if !failing.is_empty() {
        return Err(Failure::Refused(format!(
            "{} of {} link(s) not up after {} s: {}",
            failing.len(),
            matching.len(),
            setup.wait.as_secs(),
            failing.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vhost_from_uri() {
        assert_eq!(uri_vhost("amqp://u:p@h:5672"), "/");
        assert_eq!(uri_vhost("amqp://u:p@h:5672/"), "/");
        assert_eq!(uri_vhost("amqp://h/%2F"), "/");
        assert_eq!(uri_vhost("amqp://h/prod?heartbeat=10"), "prod");
    }

    #[test]
    fn masks_password() {
        assert_eq!(
            mask("amqp://u:secret@h:5672/%2F"),
            "amqp://u:***@h:5672/%2F"
        );
        assert_eq!(mask("amqp://h"), "amqp://h");
    }
}
