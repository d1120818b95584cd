//! TLS for `amqps://` URIs (rustls with the ring provider). The URI's query says
//! how to verify the server, with RabbitMQ's parameter names: `cacertfile` (PEM
//! CA bundle; default: the system's roots), `verify` (`verify_peer`, the default,
//! or `verify_none`), `server_name_indication` (default: the host), and
//! `certfile` + `keyfile` for a client certificate.

use crate::uri::AmqpUri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn read_pem(path: &str, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(format!("{what} {path}: {e}")))
}

fn certificates(path: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, "cannot read certificate file")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("bad PEM in {path}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("no certificate in {path}")));
    }
    Ok(certs)
}

/// The client configuration an `amqps://` URI asks for.
pub fn client_config(uri: &AmqpUri) -> io::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?;
    let builder = match uri.param("verify") {
        Some("verify_none") => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        None | Some("verify_peer") => {
            let mut roots = RootCertStore::empty();
            match uri.param("cacertfile") {
                Some(path) => {
                    for cert in certificates(path)? {
                        roots
                            .add(cert)
                            .map_err(|e| invalid(format!("bad CA certificate in {path}: {e}")))?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots)
        }
        Some(other) => {
            return Err(invalid(format!(
                "verify must be verify_peer or verify_none, not {other}"
            )))
        }
    };
    match (uri.param("certfile"), uri.param("keyfile")) {
        (Some(cert), Some(key)) => {
            let pem = read_pem(key, "cannot read key file")?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| invalid(format!("bad key: {e}")))?
                .ok_or_else(|| invalid("no private key in keyfile".into()))?;
            builder
                .with_client_auth_cert(certificates(cert)?, key)
                .map_err(|e| invalid(format!("client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(invalid("certfile and keyfile go together".into())),
    }
}

/// Opens a TLS session over `tcp` as the URI says.
pub async fn connect(uri: &AmqpUri, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    let config = client_config(uri)?;
    let name = uri
        .param("server_name_indication")
        .unwrap_or(&uri.host)
        .to_owned();
    let server = ServerName::try_from(name.clone())
        .map_err(|_| invalid(format!("bad server name {name}")))?;
    TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
}

/// `verify=verify_none`: accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
