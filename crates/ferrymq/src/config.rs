//! Broker configuration: defaults, then a TOML file, then `FERRYMQ_*` env vars and flags.

use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;

/// Command-line flags; each also reads a `FERRYMQ_*` environment variable.
#[derive(Parser, Debug, Default)]
#[command(
    name = "ferrymq",
    version,
    about = "FerryMQ: an AMQP 0-9-1 message broker"
)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, env = "FERRYMQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for durable data.
    #[arg(long, env = "FERRYMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// AMQP listener address (HOST:PORT). With the default 0.0.0.0 the IPv6 wildcard is bound too.
    #[arg(long, env = "FERRYMQ_AMQP_BIND")]
    pub amqp_bind: Option<String>,
    /// HTTP management listener address (HOST:PORT).
    #[arg(long, env = "FERRYMQ_HTTP_BIND")]
    pub http_bind: Option<String>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `ferrymq_amqp=debug`.
    #[arg(long, env = "FERRYMQ_LOG")]
    pub log: Option<String>,
    /// TLS certificate chain (PEM); enables the AMQPS listener.
    #[arg(long, env = "FERRYMQ_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "FERRYMQ_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) for verifying client certificates.
    #[arg(long, env = "FERRYMQ_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// AMQPS listener address (HOST:PORT), used when a certificate is configured.
    #[arg(long, env = "FERRYMQ_AMQPS_BIND")]
    pub amqps_bind: Option<String>,
    /// HTTPS management listener address (HOST:PORT); off unless given.
    #[arg(long, env = "FERRYMQ_HTTPS_BIND")]
    pub https_bind: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for durable data.
    pub data_dir: PathBuf,
    /// AMQP listener address.
    pub amqp_bind: String,
    /// HTTP management listener address.
    pub http_bind: String,
    /// Log filter.
    pub log: String,
    /// Largest frame accepted.
    pub frame_max: u32,
    /// Highest channel number.
    pub channel_max: u16,
    /// Heartbeat proposed to clients (seconds).
    pub heartbeat: u16,
    /// Largest message body accepted (bytes).
    pub max_message_size: u64,
    /// Users that may only connect from loopback.
    pub loopback_users: Vec<String>,
    /// User created on first start when no users exist.
    pub default_user: String,
    /// Password of `default_user`.
    pub default_pass: String,
    /// Vhost created on first start.
    pub default_vhost: String,
    /// Block publishers when free disk under the data dir is below this many bytes.
    pub disk_free_limit: u64,
    /// Block publishers when the broker uses more than this fraction of the machine's memory.
    pub memory_high_watermark: f64,
    /// Name shown to clients and recorded in federation's `x-received-from`
    /// (default `ferrymq@HOST:AMQP_PORT`, unique per broker on a host).
    pub cluster_name: Option<String>,
    /// TLS certificate chain (PEM); with `tls_key_file` it enables AMQPS.
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to.
    pub tls_ca_file: Option<PathBuf>,
    /// Ask AMQPS clients for a certificate and verify it (enables SASL EXTERNAL).
    pub tls_verify_peer: bool,
    /// With `tls_verify_peer`: refuse clients without a certificate.
    pub tls_fail_if_no_peer_cert: bool,
    /// AMQPS listener address (only when a certificate is configured).
    pub amqps_bind: String,
    /// HTTPS management listener address (off when unset).
    pub https_bind: Option<String>,
    /// Seconds between checks of the TLS files for a renewed certificate.
    pub tls_reload_interval: u64,
    /// Most AMQP connections at once (0: no limit).
    pub max_connections: usize,
    /// Milliseconds a failed AMQP login waits before it is answered.
    pub auth_failure_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("ferrymq-data"),
            amqp_bind: "0.0.0.0:5672".into(),
            http_bind: "0.0.0.0:15672".into(),
            log: "info".into(),
            frame_max: 131072,
            channel_max: 2047,
            heartbeat: 60,
            cluster_name: None,
            max_message_size: 128 << 20,
            loopback_users: vec!["guest".into()],
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_vhost: "/".into(),
            // RabbitMQ's defaults: 50 MB free disk, 40 % of memory.
            disk_free_limit: 50_000_000,
            memory_high_watermark: 0.4,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_verify_peer: false,
            tls_fail_if_no_peer_cert: false,
            amqps_bind: "0.0.0.0:5671".into(),
            https_bind: None,
            tls_reload_interval: 5,
            max_connections: 0,
            auth_failure_delay_ms: 1000,
        }
    }
}

impl Config {
    /// Builds the configuration from flags (which already include env vars) and the file.
    pub fn load(flags: &Flags) -> Result<Self, String> {
        let mut cfg = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str::<Config>(&text)
                    .map_err(|e| format!("invalid config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(d) = &flags.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(b) = &flags.amqp_bind {
            cfg.amqp_bind = b.clone();
        }
        if let Some(b) = &flags.http_bind {
            cfg.http_bind = b.clone();
        }
        if let Some(l) = &flags.log {
            cfg.log = l.clone();
        }
        if let Some(p) = &flags.tls_cert_file {
            cfg.tls_cert_file = Some(p.clone());
        }
        if let Some(p) = &flags.tls_key_file {
            cfg.tls_key_file = Some(p.clone());
        }
        if let Some(p) = &flags.tls_ca_file {
            cfg.tls_ca_file = Some(p.clone());
        }
        if let Some(b) = &flags.amqps_bind {
            cfg.amqps_bind = b.clone();
        }
        if let Some(b) = &flags.https_bind {
            cfg.https_bind = Some(b.clone());
        }
        if cfg.tls_cert_file.is_some() != cfg.tls_key_file.is_some() {
            return Err("tls_cert_file and tls_key_file go together: set both or neither".into());
        }
        if cfg.https_bind.is_some() && cfg.tls_cert_file.is_none() {
            return Err("https_bind needs tls_cert_file and tls_key_file".into());
        }
        Ok(cfg)
    }

    /// The TLS files, when a certificate is configured.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            ca: self.tls_ca_file.clone(),
            verify_peer: self.tls_verify_peer,
            fail_if_no_peer_cert: self.tls_fail_if_no_peer_cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("ferrymq-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.toml");
        std::fs::write(&file, "amqp_bind = \"127.0.0.1:1\"\nheartbeat = 5\n").unwrap();
        let flags = Flags {
            config: Some(file),
            amqp_bind: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let cfg = Config::load(&flags).unwrap();
        assert_eq!(cfg.amqp_bind, "127.0.0.1:2");
        assert_eq!(cfg.heartbeat, 5);
        assert_eq!(cfg.http_bind, "0.0.0.0:15672");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = toml::from_str::<Config>("amqp_port = 1").unwrap_err();
        assert!(e.to_string().contains("amqp_port"));
    }
}
