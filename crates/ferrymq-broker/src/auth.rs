//! Users, password hashes and per-vhost permissions.
//!
//! Password hashes use RabbitMQ's scheme (4-byte random salt, `base64(salt ++
//! H(salt ++ password))`) so users imported from a RabbitMQ definitions export keep
//! their passwords.

use base64::Engine;
use regex::Regex;
use sha2::{Digest, Sha256, Sha512};

/// Hash functions RabbitMQ may have used for a stored password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    /// `rabbit_password_hashing_sha256` (RabbitMQ's default).
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
}

impl HashingAlgorithm {
    /// RabbitMQ's module name for the algorithm.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sha256 => "rabbit_password_hashing_sha256",
            Self::Sha512 => "rabbit_password_hashing_sha512",
        }
    }
    /// Parses RabbitMQ's module name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rabbit_password_hashing_sha256" => Some(Self::Sha256),
            "rabbit_password_hashing_sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
    fn digest(&self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            Self::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        }
    }
}

/// A broker user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub name: String,
    /// base64 of salt ++ hash; empty means password login is disabled.
    pub password_hash: String,
    /// Algorithm of `password_hash`.
    pub hashing_algorithm: HashingAlgorithm,
    /// Management tags (administrator, monitoring, policymaker, management).
    pub tags: Vec<String>,
    /// Limits (`max-connections`, `max-channels`; see `limits`).
    pub limits: serde_json::Map<String, serde_json::Value>,
}

impl User {
    /// A user with a freshly salted hash of `password`.
    pub fn with_password(name: &str, password: &str, tags: Vec<String>) -> Self {
        User {
            name: name.to_owned(),
            password_hash: hash_password(password, HashingAlgorithm::Sha256),
            hashing_algorithm: HashingAlgorithm::Sha256,
            tags,
            limits: Default::default(),
        }
    }

    /// Whether `password` matches the stored hash (constant-time compare).
    pub fn check_password(&self, password: &str) -> bool {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&self.password_hash) else {
            return false;
        };
        if raw.len() < 5 {
            return false;
        }
        let (salt, expected) = raw.split_at(4);
        let got = self.hashing_algorithm.digest(salt, password.as_bytes());
        got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether the user has the `administrator` tag.
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }
}

/// Hashes a password with a random 4-byte salt, RabbitMQ-style.
pub fn hash_password(password: &str, algorithm: HashingAlgorithm) -> String {
    let salt: [u8; 4] = rand::random();
    let mut raw = salt.to_vec();
    raw.extend(algorithm.digest(&salt, password.as_bytes()));
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A user's configure / write / read permissions in one vhost.
#[derive(Debug, Clone)]
pub struct Permission {
    /// Regex source for configure (declare, delete).
    pub configure: String,
    /// Regex source for write (publish, bind destination).
    pub write: String,
    /// Regex source for read (consume, get, purge, bind source).
    pub read: String,
    compiled: [Option<Regex>; 3],
}

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare / delete.
    Configure,
    /// Publish / bind into.
    Write,
    /// Consume / get / bind from.
    Read,
}

impl Access {
    /// RabbitMQ's word for the access kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

impl Permission {
    /// Compiles the three regexes; an invalid one is an error naming it.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, String> {
        let compile = |what: &str, s: &str| -> Result<Option<Regex>, String> {
            // RabbitMQ treats the empty pattern as "nothing", not "everything".
            if s.is_empty() {
                return Ok(None);
            }
            Regex::new(s)
                .map(Some)
                .map_err(|e| format!("invalid {what} regex '{s}': {e}"))
        };
        Ok(Permission {
            compiled: [
                compile("configure", configure)?,
                compile("write", write)?,
                compile("read", read)?,
            ],
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    /// Full access (`.*` for all three).
    pub fn all() -> Self {
        Self::new(".*", ".*", ".*").expect("valid regex")
    }

    /// Whether `resource` (a queue or exchange name) is allowed for `access`.
    pub fn allows(&self, access: Access, resource: &str) -> bool {
        // The default exchange is checked under the name amq.default, as in RabbitMQ.
        let resource = if resource.is_empty() {
            "amq.default"
        } else {
            resource
        };
        let re = &self.compiled[access as usize];
        re.as_ref().is_some_and(|r| r.is_match(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_roundtrip() {
        let u = User::with_password("a", "secret", vec![]);
        assert!(u.check_password("secret"));
        assert!(!u.check_password("Secret"));
    }

    #[test]
    fn rabbitmq_hash_compat() {
        // Hash made by RabbitMQ's algorithm for password "guest" with salt 0x908dc60a.
        let salt = [0x90u8, 0x8d, 0xc6, 0x0a];
        let mut raw = salt.to_vec();
        raw.extend(HashingAlgorithm::Sha256.digest(&salt, b"guest"));
        let u = User {
            name: "guest".into(),
            password_hash: base64::engine::general_purpose::STANDARD.encode(raw),
            hashing_algorithm: HashingAlgorithm::Sha256,
            tags: vec![],
            limits: Default::default(),
        };
        assert!(u.check_password("guest"));
    }

    #[test]
    fn permissions() {
        let p = Permission::new("^q\\.", "", ".*").unwrap();
        assert!(p.allows(Access::Configure, "q.1"));
        assert!(!p.allows(Access::Configure, "x"));
        assert!(!p.allows(Access::Write, "q.1"));
        assert!(p.allows(Access::Read, ""));
    }
}
