//! Broker processes (the `ferrymq` binary) for tests that restart or kill them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A broker process on a fixed data dir.
pub struct Proc {
    child: Child,
    /// AMQP port.
    pub port: u16,
    /// HTTP port (0 when not fixed).
    pub http_port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary on `dir` with AMQP on `port`; waits until it listens.
pub fn spawn(dir: &Path, port: u16) -> Proc {
    spawn_with(dir, port, 0)
}

/// Like [`spawn`] with a fixed HTTP port too (0: any); waits for both listeners.
pub fn spawn_with(dir: &Path, port: u16, http_port: u16) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrymq"))
        .args([
            "--amqp-bind",
            &format!("127.0.0.1:{port}"),
            "--http-bind",
            &format!("127.0.0.1:{http_port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("FERRYMQ_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if line.contains("HTTP management API ready") {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("broker ready");
    Proc {
        child,
        port,
        http_port,
        log,
    }
}

impl Proc {
    /// AMQP URI as guest.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
    /// SIGTERM and reap.
    pub fn term(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
    /// Everything the broker logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}
