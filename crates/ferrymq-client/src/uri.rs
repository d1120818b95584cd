//! `amqp://user:pass@host:port/vhost` parsing.
//!
//! amq-protocol-uri maps an IP-literal host to its default (`localhost`, which may resolve to
//! `::1`), so a benchmark aimed at `127.0.0.1` could silently hit another listener; this parser
//! keeps the host exactly as written.

use std::io;

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpUri {
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// TCP port (5672 when the URI names none).
    pub port: u16,
    /// User name for PLAIN authentication.
    pub user: String,
    /// Password for PLAIN authentication.
    pub password: String,
    /// Virtual host, percent-decoded (`%2F` is `/`).
    pub vhost: String,
    /// `amqps://`: TLS.
    pub tls: bool,
    /// Query parameters (`heartbeat`, `cacertfile`, `verify`, …), percent-decoded.
    pub query: Vec<(String, String)>,
}

impl AmqpUri {
    /// Parses an `amqp://` URI; missing parts default to `guest:guest`, port 5672, vhost `/`.
    pub fn parse(uri: &str) -> io::Result<Self> {
        let invalid =
            |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {why}"));
        let (tls, rest) = if let Some(r) = uri.strip_prefix("amqp://") {
            (false, r)
        } else if let Some(r) = uri.strip_prefix("amqps://") {
            (true, r)
        } else {
            return Err(invalid("the scheme must be amqp:// or amqps://"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (rest, query_text) = rest.split_once('?').unwrap_or((rest, ""));
        let mut query = Vec::new();
        for pair in query_text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.push((percent_decode(k)?, percent_decode(v)?));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (u, p) = info.split_once(':').unwrap_or((info, ""));
                (percent_decode(u)?, percent_decode(p)?)
            }
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
            None if tls => 5671,
            None => 5672,
        };
        if host.contains(['/', ' ']) {
            return Err(invalid("bad host"));
        }
        let host = if host.is_empty() { "localhost" } else { host };
        // An empty path means the default vhost, as most clients read it.
        let vhost = if path.is_empty() {
            "/".to_string()
        } else {
            percent_decode(path)?
        };
        Ok(Self {
            host: host.to_string(),
            port,
            user,
            password,
            vhost,
            tls,
            query,
        })
    }

    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The URI without credentials, for status pages and logs.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let vhost: String = self
            .vhost
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                b'%' => "%25".to_string(),
                _ => (b as char).to_string(),
            })
            .collect();
        format!("{scheme}://{}/{vhost}", self.address())
    }

    /// `host:port`, bracketing IPv6 literals, for `TcpStream::connect`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> io::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("bad escape in {s}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let u = AmqpUri::parse("amqp://bob:s%40cret@127.0.0.1:5710/%2F").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5710);
        assert_eq!(u.user, "bob");
        assert_eq!(u.password, "s@cret");
        assert_eq!(u.vhost, "/");
        assert_eq!(u.address(), "127.0.0.1:5710");
    }

    #[test]
    fn defaults_and_ipv6() {
        let u = AmqpUri::parse("amqp://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5672));
        assert_eq!((u.user.as_str(), u.vhost.as_str()), ("guest", "/"));
        assert_eq!(u.address(), "[::1]:5672");
        assert_eq!(AmqpUri::parse("amqp://h/prod").unwrap().vhost, "prod");
        let s = AmqpUri::parse("amqps://u:p@h/v?verify=verify_none&heartbeat=5").unwrap();
        assert!(s.tls);
        assert_eq!(s.port, 5671);
        assert_eq!(s.param("verify"), Some("verify_none"));
        assert_eq!(s.redacted(), "amqps://h:5671/v");
        assert!(AmqpUri::parse("http://h").is_err());
        assert_eq!(
            AmqpUri::parse("amqp://u:secret@h/%2F").unwrap().redacted(),
            "amqp://h:5672/%2F"
        );
    }
}
