//! Runs the real `ferryctl` binary against FerryMQ brokers started in-process.

use ferrymq::config::Config;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A broker on ephemeral ports with a temporary data directory.
struct Broker {
    running: ferrymq::Running,
    dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> Broker {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferryctl-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let cfg = Config {
        amqp_bind: "127.0.0.1:0".into(),
        http_bind: "127.0.0.1:0".into(),
        data_dir: dir.clone(),
        ..Config::default()
    };
    let running = ferrymq::start(&cfg).await.expect("broker starts");
    Broker { running, dir }
}

impl Broker {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.running.http_addrs[0].port())
    }

    fn amqp_uri(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.running.amqp_addrs[0].port()
        )
    }

    /// A management API call as guest, off the runtime's threads: (status, JSON body).
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url());
        let method = method.to_string();
        tokio::task::spawn_blocking(move || {
            // "guest:guest" in base64.
            let req = ureq::request(&method, &url).set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=");
            let res = match body {
                Some(b) => req
                    .set("Content-Type", "application/json")
                    .send_string(&b.to_string()),
                None => req.call(),
            };
            let resp = match res {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("API call failed: {e}"),
            };
            let status = resp.status();
            let text = resp.into_string().unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
        .await
        .unwrap()
    }

    async fn declare(&self, queue: &str) {
        let (code, body) = self
            .api(
                "PUT",
                &format!("/api/queues/%2F/{queue}"),
                Some(json!({"durable": true})),
            )
            .await;
        assert!(code == 201 || code == 204, "{code} {body}");
    }

    async fn publish(&self, queue: &str, n: usize) {
        for i in 0..n {
            let (code, body) = self
                .api(
                    "POST",
                    "/api/exchanges/%2F/amq.default/publish",
                    Some(json!({"routing_key": queue, "payload": format!("m{i}"),
                                "payload_encoding": "string", "properties": {}})),
                )
                .await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["routed"], true, "{body}");
        }
    }

    async fn depth(&self, queue: &str) -> u64 {
        let (_, q) = self
            .api("GET", &format!("/api/queues/%2F/{queue}"), None)
            .await;
        q["messages"].as_u64().unwrap_or(0)
    }
}

/// Output of one `ferryctl` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `ferryctl args…` with a clean FERRYCTL_* environment.
async fn ctl(args: &[&str]) -> Run {
    ctl_env(args, &[]).await
}

/// Runs `ferryctl args…` with only the given FERRYCTL_* variables set.
async fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferryctl"))
            .args(&args)
            .env_remove("FERRYCTL_URL")
            .env_remove("FERRYCTL_USER")
            .env_remove("FERRYCTL_PASSWORD")
            .env_remove("FERRYCTL_CONFIG")
            // No config file from the machine's home directory.
            .env("XDG_CONFIG_HOME", "/nonexistent-ferryctl-test")
            .envs(env)
            .output()
            .expect("run ferryctl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// Polls `check` every 100 ms until it returns `Some` or `secs` pass.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_as_table_and_json() {
    let b = start().await;
    b.declare("orders.eu").await;
    b.publish("orders.eu", 2).await;

    let run = ctl(&["list", "queues", "--url", &b.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("vhost"), "{header}");
    for col in ["name", "messages", "consumers", "policy"] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines
        .find(|l| l.contains("orders.eu"))
        .expect("queue listed");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["/", "orders.eu", "2", "0"], "{row}");

    let run = ctl(&[
        "list",
        "queues",
        "--json",
        "--url",
        &b.url(),
        "--vhost",
        "/",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let queues: Value = serde_json::from_str(&run.stdout).expect("JSON output");
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "orders.eu")
        .expect("queue in JSON");
    assert_eq!(q["messages"], 2);

    // The connection options also come from the environment.
    let run = ctl_env(&["list", "queues"], &[("FERRYCTL_URL", &b.url())]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("orders.eu"), "{}", run.stdout);
    let run = ctl_env(
        &["list", "queues", "--url", &b.url()],
        &[("FERRYCTL_PASSWORD", "wrong")],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_one_line_exit_2() {
    let b = start().await;
    let run = ctl(&["list", "vhosts", "--url", &b.url(), "--password", "nope"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("ferryctl: login failed for user 'guest'"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_exit_2() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = ctl(&["list", "queues", "--url", &url]).await;
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim_end(),
        format!("ferryctl: cannot reach {url}: connection refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_error_is_exit_2() {
    let run = ctl(&["list", "widgets"]).await;
    assert_eq!(run.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federate_then_decommission_only_once_drained() {
    let old = start().await;
    let new = start().await;
    old.declare("mig.jobs").await;
    old.publish("mig.jobs", 3).await;

    let run = ctl(&[
        "migrate",
        "federate",
        "--to",
        &new.url(),
        "--upstream-uri",
        &old.amqp_uri(),
        "--pattern",
        "^mig\\.",
        "--name",
        "old",
        "--lazy",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("migrate-old"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("guest:guest"),
        "password printed: {}",
        run.stdout
    );
    let (code, up) = new
        .api("GET", "/api/parameters/federation-upstream/%2F/old", None)
        .await;
    assert_eq!(code, 200, "{up}");
    let (code, policy) = new.api("GET", "/api/policies/%2F/migrate-old", None).await;
    assert_eq!(code, 200, "{policy}");
    assert_eq!(policy["definition"], json!({"federation-upstream": "old"}));
    assert_eq!(policy["apply-to"], "queues");
    assert_eq!(policy["pattern"], "^mig\\.");

    // The link appears once the queue exists downstream.
    new.declare("mig.jobs").await;
    eventually(15, "link in migrate status", || async {
        let run = ctl(&["migrate", "status", "--json", "--to", &new.url()]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let rows: Value = serde_json::from_str(&run.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|l| l["queue"] == "mig.jobs" && l["upstream"] == "old")
            .cloned()
    })
    .await;
    let run = ctl(&["list", "links", "--url", &new.url()]).await;
    assert!(run.stdout.contains("mig.jobs"), "{}", run.stdout);

    let run = check_decommission(&old, &new).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("BLOCKED") && run.stdout.contains("3 messages still upstream"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // A consumer on the new broker pulls everything across the link.
    let (_conn, mut consumer) = consume(&new, "mig.jobs", 10).await;
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(15), consumer.next())
            .await
            .expect("message federated in time")
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The link acks upstream asynchronously, so the old depth reaches 0 a little later.
    eventually(15, "old queue drained", || async {
        (old.depth("mig.jobs").await == 0).then_some(())
    })
    .await;

    // An application still consuming on the old broker blocks; the link's own consumer does not.
    let legacy = lapin::Connection::connect(&old.amqp_uri(), Default::default())
        .await
        .unwrap();
    let legacy_ch = legacy.create_channel().await.unwrap();
    let _legacy_consumer = legacy_ch
        .basic_consume(
            "mig.jobs".into(),
            "legacy-app".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let run = check_decommission(&old, &new).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("legacy-app"), "{}", run.stdout);
    assert!(!run.stdout.contains("federation-link-"), "{}", run.stdout);
    legacy.close(200, "done".into()).await.unwrap();

    // The publish rate is sampled every 5 s, so the verdict turns OK once it decays.
    let run = eventually(30, "check-decommission to pass", || async {
        let run = check_decommission(&old, &new).await;
        (run.code == 0).then_some(run)
    })
    .await;
    assert!(run.stdout.contains("OK"), "{}", run.stdout);
    assert!(run.stdout.contains("mig.jobs"), "{}", run.stdout);
}

/// GET /api/definitions without `rabbit_version`/`ferrymq_version`, for comparisons.
async fn definitions(b: &Broker) -> Value {
    let (code, mut doc) = b.api("GET", "/api/definitions", None).await;
    assert_eq!(code, 200, "{doc}");
    let o = doc.as_object_mut().unwrap();
    o.remove("rabbit_version");
    o.remove("ferrymq_version");
    doc
}

fn has(doc: &Value, section: &str, name: &str) -> bool {
    doc[section]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_export_import_round_trip() {
    let a = start().await;
    let b = start().await;
    a.declare("defs.q").await;
    let (code, body) = a
        .api(
            "PUT",
            "/api/policies/%2F/defs-ttl",
            Some(
                json!({"pattern": "^defs\\.", "definition": {"message-ttl": 60000},
                        "apply-to": "queues"}),
            ),
        )
        .await;
    assert!(code == 201 || code == 204, "{code} {body}");

    // To stdout: pretty JSON.
    let run = ctl(&["definitions", "export", "--url", &a.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.lines().count() > 1, "{}", run.stdout);
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(has(&doc, "queues", "defs.q"), "{doc}");

    // To a file, then into another broker.
    let file = a.dir.with_extension("defs.json");
    let file_s = file.to_str().unwrap();
    let run = ctl(&["definitions", "export", "--url", &a.url(), "--file", file_s]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let run = ctl(&["definitions", "import", file_s, "--url", &b.url()]).await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("1 policies"), "{}", run.stdout);
    let imported = definitions(&b).await;
    assert!(has(&imported, "queues", "defs.q"), "{imported}");
    assert!(has(&imported, "policies", "defs-ttl"), "{imported}");

    // A vhost export has no `vhost` fields and imports into the named vhost.
    let run = ctl(&["definitions", "export", "--url", &a.url(), "--vhost", "/"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(has(&doc, "queues", "defs.q"), "{doc}");
    assert!(doc.get("users").is_none(), "{doc}");

    // A broken file is refused on one line.
    let bad = a.dir.with_extension("bad.json");
    std::fs::write(&bad, r#"{"queues": 5}"#).unwrap();
    let run = ctl(&[
        "definitions",
        "import",
        bad.to_str().unwrap(),
        "--url",
        &b.url(),
    ])
    .await;
    let _ = std::fs::remove_file(&bad);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("400"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_definitions_is_idempotent_and_copies_users() {
    let old = start().await;
    let new = start().await;
    old.declare("copy.q").await;
    let (code, body) = old
        .api(
            "PUT",
            "/api/users/alice",
            Some(json!({"password": "s3cret", "tags": "management"})),
        )
        .await;
    assert!(code == 201 || code == 204, "{code} {body}");
    let (code, body) = old
        .api(
            "PUT",
            "/api/permissions/%2F/alice",
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await;
    assert!(code == 201 || code == 204, "{code} {body}");

    let copy = [
        "migrate",
        "copy-definitions",
        "--from",
        &old.url(),
        "--to",
        &new.url(),
    ];
    let before = definitions(&new).await;
    let mut dry = copy.to_vec();
    dry.push("--dry-run");
    let run = ctl(&dry).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("would copy"), "{}", run.stdout);
    assert_eq!(
        definitions(&new).await,
        before,
        "dry run changed the broker"
    );

    let run = ctl(&copy).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for section in [
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
        "policies",
        "parameters",
    ] {
        assert!(run.stdout.contains(section), "{}", run.stdout);
    }
    let once = definitions(&new).await;
    assert!(has(&once, "queues", "copy.q"), "{once}");
    assert!(has(&once, "users", "alice"), "{once}");

    let run = ctl(&copy).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        definitions(&new).await,
        once,
        "second copy changed something"
    );

    // The copied user logs in to the new broker with its old password.
    let url = format!("{}/api/whoami", new.url());
    let who = tokio::task::spawn_blocking(move || {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let resp = ureq::get(&url)
            .set("Authorization", &format!("Basic {token}"))
            .call()
            .expect("alice logs in");
        serde_json::from_str::<Value>(&resp.into_string().unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(who["name"], "alice", "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_missing_objects_until_copied() {
    let old = start().await;
    let new = start().await;
    old.declare("plan.orders").await;
    old.declare("other.q").await;
    let plan = [
        "migrate",
        "plan",
        "--from",
        &old.url(),
        "--to",
        &new.url(),
        "--pattern",
        "^plan\\.",
    ];
    let run = ctl(&plan).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (missing, federate) = run.stdout.split_once("queues to federate").unwrap();
    assert!(
        missing
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["queue", "/", "plan.orders"]),
        "{}",
        run.stdout
    );
    assert!(missing.contains("other.q"), "{}", run.stdout);
    assert!(federate.contains("plan.orders"), "{}", run.stdout);
    assert!(!federate.contains("other.q"), "{}", run.stdout);

    let run = ctl(&[
        "migrate",
        "copy-definitions",
        "--from",
        &old.url(),
        "--to",
        &new.url(),
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ctl(&plan).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (missing, federate) = run.stdout.split_once("queues to federate").unwrap();
    assert!(!missing.contains("plan.orders"), "{}", run.stdout);
    assert!(missing.contains("nothing"), "{}", run.stdout);
    assert!(federate.contains("plan.orders"), "{}", run.stdout);

    let run = ctl(&[
        "migrate",
        "plan",
        "--from",
        &old.url(),
        "--to",
        &new.url(),
        "--pattern",
        "(",
    ])
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_and_delete_queue_and_policy() {
    let b = start().await;
    let url = b.url();
    let run = ctl(&[
        "declare",
        "queue",
        "dq.jobs",
        "--url",
        &url,
        "--durable",
        "false",
        "--arg",
        "x-max-length=10",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, q) = b.api("GET", "/api/queues/%2F/dq.jobs", None).await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["durable"], false, "{q}");
    assert_eq!(q["arguments"]["x-max-length"], 10, "{q}");

    let run = ctl(&[
        "declare",
        "policy",
        "dq-limit",
        "--url",
        &url,
        "--pattern",
        "^dq\\.",
        "--definition",
        r#"{"max-length": 5}"#,
        "--priority",
        "3",
        "--apply-to",
        "queues",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, p) = b.api("GET", "/api/policies/%2F/dq-limit", None).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["pattern"], "^dq\\.", "{p}");
    assert_eq!(p["definition"], json!({"max-length": 5}), "{p}");
    assert_eq!(p["priority"], 3, "{p}");
    assert_eq!(p["apply-to"], "queues", "{p}");

    let run = ctl(&["delete", "policy", "dq-limit", "--url", &url]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, _) = b.api("GET", "/api/policies/%2F/dq-limit", None).await;
    assert_eq!(code, 404);
    let run = ctl(&["delete", "queue", "dq.jobs", "--url", &url, "--vhost", "/"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, _) = b.api("GET", "/api/queues/%2F/dq.jobs", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_declare_is_exit_1_with_reason() {
    let b = start().await;
    let run = ctl(&[
        "declare",
        "policy",
        "broken",
        "--url",
        &b.url(),
        "--pattern",
        "(",
        "--definition",
        r#"{"max-length": 5}"#,
    ])
    .await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("ferryctl: PUT /api/policies/%2F/broken: 400: "),
        "{}",
        run.stderr
    );
    let (code, _) = b.api("GET", "/api/policies/%2F/broken", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_other_objects() {
    let b = start().await;
    let url = b.url();
    let ok = |run: Run| assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    ok(ctl(&["declare", "vhost", "dv", "--url", &url]).await);
    ok(ctl(&[
        "declare",
        "permission",
        "guest",
        "--vhost",
        "dv",
        "--url",
        &url,
    ])
    .await);
    ok(ctl(&[
        "declare",
        "user",
        "bob",
        "--new-password",
        "pw",
        "--tags",
        "management",
        "--url",
        &url,
    ])
    .await);
    ok(ctl(&[
        "declare",
        "permission",
        "bob",
        "--vhost",
        "dv",
        "--read",
        "^r",
        "--url",
        &url,
    ])
    .await);
    ok(ctl(&[
        "declare", "exchange", "dx", "--type", "topic", "--vhost", "dv", "--url", &url,
    ])
    .await);
    ok(ctl(&["declare", "queue", "dq", "--vhost", "dv", "--url", &url]).await);
    ok(ctl(&[
        "declare",
        "binding",
        "--vhost",
        "dv",
        "--source",
        "dx",
        "--destination",
        "dq",
        "--routing-key",
        "a.#",
        "--url",
        &url,
    ])
    .await);
    ok(ctl(&[
        "declare",
        "upstream",
        "up",
        "--vhost",
        "dv",
        "--uri",
        "amqp://old-broker:5672",
        "--set",
        "prefetch-count=50",
        "--url",
        &url,
    ])
    .await);

    let (code, v) = b.api("GET", "/api/vhosts/dv", None).await;
    assert_eq!(code, 200, "{v}");
    let (code, p) = b.api("GET", "/api/permissions/dv/bob", None).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["read"], "^r", "{p}");
    assert_eq!(p["write"], ".*", "{p}");
    let (code, e) = b.api("GET", "/api/exchanges/dv/dx", None).await;
    assert_eq!(code, 200, "{e}");
    assert_eq!(e["type"], "topic", "{e}");
    let (code, bs) = b.api("GET", "/api/queues/dv/dq/bindings", None).await;
    assert_eq!(code, 200, "{bs}");
    assert!(
        bs.as_array()
            .unwrap()
            .iter()
            .any(|x| x["source"] == "dx" && x["routing_key"] == "a.#"),
        "{bs}"
    );
    let (code, up) = b
        .api("GET", "/api/parameters/federation-upstream/dv/up", None)
        .await;
    assert_eq!(code, 200, "{up}");
    assert_eq!(up["value"]["prefetch-count"], 50, "{up}");

    ok(ctl(&["delete", "upstream", "up", "--vhost", "dv", "--url", &url]).await);
    ok(ctl(&["delete", "exchange", "dx", "--vhost", "dv", "--url", &url]).await);
    ok(ctl(&["delete", "user", "bob", "--url", &url]).await);
    ok(ctl(&["delete", "vhost", "dv", "--url", &url]).await);
    let (code, _) = b.api("GET", "/api/users/bob", None).await;
    assert_eq!(code, 404);
    let (code, _) = b.api("GET", "/api/vhosts/dv", None).await;
    assert_eq!(code, 404);

    // Deleting what is not there is exit 1.
    let run = ctl(&["delete", "queue", "nope", "--url", &url]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Restarting an unknown link is refused too.
    let run = ctl(&["link", "restart", "--vhost", "/", "nope", "--url", &url]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
}

/// A live producer on `queue` of `broker`, publishing every 20 ms until `stop`.
fn producer(
    uri: String,
    queue: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let conn = lapin::Connection::connect(&uri, Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            ch.basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                format!("live-{n}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conn.close(200, "done".into()).await.ok();
        n
    })
}

/// A consumer tagged `app` on `queue` of `b` with prefetch `prefetch`.
async fn consume(b: &Broker, queue: &str, prefetch: u16) -> (lapin::Connection, lapin::Consumer) {
    let conn = lapin::Connection::connect(&b.amqp_uri(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = ch
        .basic_consume(
            queue.into(),
            "app".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

/// `ferryctl migrate check-decommission --from OLD --to NEW`.
async fn check_decommission(old: &Broker, new: &Broker) -> Run {
    let (from, to) = (old.url(), new.url());
    ctl(&[
        "migrate",
        "check-decommission",
        "--from",
        &from,
        "--to",
        &to,
    ])
    .await
}

/// `ferryctl --config CFG args…`.
async fn ctl_cfg(cfg: &str, args: &[&str]) -> Run {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    ctl(&all).await
}

/// `ferryctl migrate federate --to NEW --from FROM --pattern PATTERN`.
async fn federate(new: &Broker, from: &str, pattern: &str) -> Run {
    let to = new.url();
    ctl(&[
        "migrate",
        "federate",
        "--to",
        &to,
        "--from",
        from,
        "--pattern",
        pattern,
    ])
    .await
}

async fn status_rows(new: &Broker) -> Vec<Value> {
    let run = ctl(&["migrate", "status", "--json", "--to", &new.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str::<Value>(&run.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federate_verifies_links_and_status_follows_the_phases_to_drained() {
    let old = start().await;
    let new = start().await;
    old.declare("mig.orders").await;
    old.publish("mig.orders", 50).await;
    new.declare("mig.orders").await;

    // A pattern that matches nothing on the new broker is refused and sets up nothing.
    let run = federate(&new, &old.amqp_uri(), "^nomatch\\.").await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("matches no queue"), "{}", run.stderr);
    let (code, _) = new
        .api("GET", "/api/parameters/federation-upstream/%2F/old", None)
        .await;
    assert_eq!(code, 404, "nothing was created");
    // Not an AMQP URI.
    let run = federate(&new, &old.url(), "^mig\\.").await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("AMQP URI"), "{}", run.stderr);

    // The real thing: the link comes up and federate says so.
    let run = federate(&new, &old.amqp_uri(), "^mig\\.").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("link mig.orders: paused")
            || run.stdout.contains("link mig.orders: running"),
        "{}",
        run.stdout
    );

    // Before any consumer moved: the backlog waits upstream.
    let row = eventually(15, "the probed backlog", || async {
        let rows = status_rows(&new).await;
        rows.into_iter().find(|r| r["upstream_messages"] == 50)
    })
    .await;
    assert_eq!(row["phase"], "waiting for consumers", "{row}");

    // Consumers move to the new broker; a producer still publishes on the old one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let live = producer(old.amqp_uri(), "mig.orders", stop.clone());
    let (_conn, mut consumer) = consume(&new, "mig.orders", 20).await;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            d.ack(BasicAckOptions::default()).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let row = eventually(20, "consumers moved, producers not yet", || async {
        let rows = status_rows(&new).await;
        rows.into_iter().find(|r| r["phase"] == "consumers moved")
    })
    .await;
    assert!(row["upstream_inflow_rate"].as_f64().unwrap() > 0.0, "{row}");
    let run = check_decommission(&old, &new).await;
    assert_eq!(
        run.code, 1,
        "a producer still publishes upstream: {}",
        run.stdout
    );
    assert!(run.stdout.contains("BLOCKED"), "{}", run.stdout);

    // Producers move: status --until-drained returns once the old queue is empty.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = live.await.unwrap();
    let run = ctl(&[
        "migrate",
        "status",
        "--to",
        &new.url(),
        "--until-drained",
        "--timeout",
        "60",
    ])
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("phase: drained"), "{}", run.stdout);
    assert!(
        run.stdout.contains("[####################] 100%"),
        "{}",
        run.stdout
    );
    eventually(30, "every message consumed on the new broker", || async {
        (received.load(std::sync::atomic::Ordering::Relaxed) == 50 + published).then_some(())
    })
    .await;
    let run = eventually(30, "check-decommission to pass", || async {
        let run = check_decommission(&old, &new).await;
        (run.code == 0).then_some(run)
    })
    .await;
    assert!(run.stdout.contains("OK"), "{}", run.stdout);
    consuming.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_get_upstream_sets_and_config_file() {
    let b = start().await;
    b.declare("dbg").await;
    let dir = std::env::temp_dir().join(format!("ferryctl-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "url = \"{}\"\nuser = \"guest\"\npassword = \"guest\"\n",
            b.url()
        ),
    )
    .unwrap();
    let cfg_path = cfg.to_str().unwrap();

    // Settings from the config file alone.
    let run = ctl_cfg(
        cfg_path,
        &[
            "publish",
            "--routing-key",
            "dbg",
            "--property",
            "message_id=m-1",
            "--header",
            "x-trace=t1",
            "--persistent",
            "hello",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("routed"), "{}", run.stdout);
    let run = ctl_cfg(cfg_path, &["publish", "--routing-key", "nowhere", "lost"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("no queue was bound"), "{}", run.stderr);
    let run = ctl_cfg(cfg_path, &["get", "dbg"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("hello"), "{}", run.stdout);
    assert!(
        run.stdout.contains("m-1") && run.stdout.contains("x-trace"),
        "{}",
        run.stdout
    );
    assert_eq!(b.depth("dbg").await, 1, "get requeues by default");
    let run = ctl_cfg(cfg_path, &["--json", "get", "dbg", "--ack"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(b.depth("dbg").await, 0, "--ack removes");

    // A flag beats the file; a wrong password in the file is a login error.
    std::fs::write(
        &cfg,
        format!("url = \"{}\"\npassword = \"wrong\"\n", b.url()),
    )
    .unwrap();
    let run = ctl_cfg(cfg_path, &["list", "queues"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("login failed"), "{}", run.stderr);
    let run = ctl_cfg(cfg_path, &["--password", "guest", "list", "queues"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&cfg, "uri = \"x\"\n").unwrap();
    let run = ctl_cfg(cfg_path, &["list", "queues"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unknown key 'uri'"), "{}", run.stderr);
    let run = ctl(&["--config", "/nonexistent/ferryctl.toml", "list", "queues"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read config file"),
        "{}",
        run.stderr
    );

    // Upstream sets.
    let url = b.url();
    for name in ["a", "b"] {
        let run = ctl(&[
            "--url",
            &url,
            "declare",
            "upstream",
            name,
            "--uri",
            "amqp://h1",
        ])
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let run = ctl(&[
        "--url",
        &url,
        "declare",
        "upstream-set",
        "olds",
        "--upstream",
        "a",
        "--upstream",
        "b",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, set) = b
        .api(
            "GET",
            "/api/parameters/federation-upstream-set/%2F/olds",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(set["value"], json!([{"upstream": "a"}, {"upstream": "b"}]));
    let run = ctl(&["--url", &url, "list", "upstream-sets"]).await;
    assert!(run.stdout.contains("olds"), "{}", run.stdout);
    let run = ctl(&["--url", &url, "delete", "upstream-set", "olds"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (code, _) = b
        .api(
            "GET",
            "/api/parameters/federation-upstream-set/%2F/olds",
            None,
        )
        .await;
    assert_eq!(code, 404);
    // A malformed URL is a one-line usage error.
    let run = ctl(&["--url", "not a url", "list", "queues"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
