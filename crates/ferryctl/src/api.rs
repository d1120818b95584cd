//! A small blocking client for the RabbitMQ-compatible management HTTP API.

use base64::Engine;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The broker refused the operation, or a check failed (exit 1).
    Refused(String),
    /// Usage, connection or login problem (exit 2).
    Fatal(String),
    /// The object asked for does not exist (404; exit 1).
    Missing(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Refused(_) | Failure::Missing(_) => 1,
            Failure::Fatal(_) => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(m) | Failure::Fatal(m) | Failure::Missing(m) => f.write_str(m),
        }
    }
}

/// TLS settings for `https://` URLs, set once from `--cacert` (else the bundled web roots).
static TLS: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Trusts the CA certificates in `path` (PEM) for `https://` management URLs.
pub fn trust_ca_file(path: &std::path::Path) -> Result<(), Failure> {
    let bad = |e: String| Failure::Fatal(format!("--cacert {}: {e}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = TLS.set(std::sync::Arc::new(config));
    Ok(())
}

/// One management API endpoint with credentials.
pub struct Api {
    base: String,
    user: String,
    auth_header: String,
    agent: ureq::Agent,
}

/// Percent-encodes one path segment (vhost `/` becomes `%2F`).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    /// A client for `url` (e.g. `http://localhost:15672`) authenticating as `user`.
    pub fn new(url: &str, user: &str, password: &str) -> Api {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Api {
            base: url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            auth_header: format!("Basic {token}"),
            // Bounded so an unresponsive broker is reported instead of hanging a script.
            agent: {
                let builder = ureq::AgentBuilder::new()
                    .timeout_connect(Duration::from_secs(5))
                    .timeout(Duration::from_secs(30));
                match TLS.get() {
                    Some(tls) => builder.tls_config(tls.clone()),
                    None => builder,
                }
                .build()
            },
        }
    }

    /// The base URL, as given.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// GET `path` (starting with `/api/`) and parse the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }

    /// GET `path`, or `None` when the object does not exist.
    pub fn get_opt(&self, path: &str) -> Result<Option<Value>, Failure> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(Failure::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUT a JSON body to `path`.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call("PUT", path, Some(body))
    }

    /// POST a JSON body to `path`.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call("POST", path, Some(body))
    }

    /// DELETE `path`.
    pub fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let req = self
            .agent
            .request(method, &format!("{}{}", self.base, path))
            .set("Authorization", &self.auth_header);
        let result = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        match result {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| {
                    Failure::Fatal(format!("reading answer from {}: {e}", self.base))
                })?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).map_err(|e| {
                    Failure::Fatal(format!("{} did not answer JSON for {path}: {e}", self.base))
                })
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let reason = body["reason"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.trim().to_string());
                // Bad credentials are a setup problem, not a refusal of this operation.
                if code == 401 && reason.to_ascii_lowercase().contains("login failed") {
                    return Err(Failure::Fatal(format!(
                        "login failed for user '{}' at {}",
                        self.user, self.base
                    )));
                }
                if code == 404 {
                    return Err(Failure::Missing(format!(
                        "{path}: not found on {}",
                        self.base
                    )));
                }
                let reason = if reason.is_empty() {
                    format!("HTTP {code}")
                } else {
                    reason
                };
                Err(Failure::Refused(format!(
                    "{method} {path}: {code}: {}",
                    one_line(&reason)
                )))
            }
            Err(ureq::Error::Transport(t)) => Err(Failure::Fatal(format!(
                "cannot reach {}: {}",
                self.base,
                transport_reason(&t)
            ))),
        }
    }
}

/// The most specific cause of a transport error, e.g. "connection refused".
fn transport_reason(t: &ureq::Transport) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        source = e.source();
    }
    one_line(&t.to_string())
}

/// Collapses a message to one line so every error is one line on stderr.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_vhost_segments() {
        assert_eq!(enc("/"), "%2F");
        assert_eq!(enc("metric.cpu"), "metric.cpu");
        assert_eq!(enc("a b"), "a%20b");
    }
}
