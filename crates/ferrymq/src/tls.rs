//! TLS for the AMQPS and HTTPS listeners (rustls, ring provider): certificate and
//! key from PEM files, optional client-certificate verification against a CA, and
//! reload without restart — the files are checked every few seconds (and on
//! SIGHUP), and new connections use the new certificate while open ones keep theirs.

use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// Where the certificate material is and how clients are checked.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against `ca`.
    pub verify_peer: bool,
    /// Refuse clients that present no certificate (with `verify_peer`).
    pub fail_if_no_peer_cert: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read TLS {what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in TLS {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in TLS {what} {}", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "key")?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("bad PEM in TLS key {}: {e}", path.display()))?
        .ok_or_else(|| format!("no private key in TLS key {}", path.display()))
}

/// Builds a server configuration from the files, checking they fit together.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if files.verify_peer {
        let ca = files
            .ca
            .as_ref()
            .ok_or("tls_verify_peer needs tls_ca_file (the CA client certificates chain to)")?;
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca, "CA file")? {
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if files.fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| format!("TLS client verification: {e}"))?,
        )
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            certificates(&files.cert, "certificate")?,
            private_key(&files.key)?,
        )
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(config))
}

/// The current TLS configuration, replaced when the files change.
pub struct TlsServer {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
}

impl TlsServer {
    /// Loads the files; an error names the file and the problem.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let config = server_config(&files)?;
        let stamps = Self::stamps(&files);
        Ok(Arc::new(TlsServer {
            files,
            current: RwLock::new((config, stamps)),
        }))
    }

    fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
        [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().0.clone())
    }

    /// Reloads when a file changed (or `force`); a bad new file keeps the old
    /// configuration and is reported, so a half-written renewal cannot take TLS down.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let stamps = Self::stamps(&self.files);
        if !force && stamps == self.current.read().1 {
            return Ok(false);
        }
        let config = server_config(&self.files)?;
        *self.current.write() = (config, stamps);
        Ok(true)
    }

    /// Checks the files every `every` and on SIGHUP.
    pub fn spawn_reloader(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                match self.reload(forced) {
                    Ok(true) => tracing::info!(
                        "TLS certificate reloaded from {}",
                        self.files.cert.display()
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("TLS reload failed, keeping the previous certificate: {e}")
                    }
                }
            }
        })
    }
}

/// The common name of the client certificate a handshake verified.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_the_problem() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
        };
        let e = server_config(&files).unwrap_err();
        assert!(
            e.contains("cannot read TLS certificate /nonexistent/cert.pem"),
            "{e}"
        );
        let e = server_config(&TlsFiles {
            verify_peer: true,
            ..files.clone()
        })
        .unwrap_err();
        assert!(e.contains("tls_verify_peer needs tls_ca_file"), "{e}");
        let dir = std::env::temp_dir().join(format!("ferrymq-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("empty.pem"), "no pem here\n").unwrap();
        let e = server_config(&TlsFiles {
            cert: dir.join("empty.pem"),
            ..files
        })
        .unwrap_err();
        assert!(e.contains("no certificate in TLS certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
