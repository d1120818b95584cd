//! Definitions in RabbitMQ's JSON format: the durable topology (vhosts, users,
//! permissions, exchanges, queues, bindings), saved under the data dir and
//! restored on start. The same format serves export and import.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A whole definitions document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Definitions {
    /// Version of the broker that wrote it (RabbitMQ writes `rabbit_version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    /// Product and version of FerryMQ when it wrote the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ferrymq_version: Option<String>,
    /// Users.
    pub users: Vec<UserDef>,
    /// Virtual hosts.
    pub vhosts: Vec<VHostDef>,
    /// Permissions.
    pub permissions: Vec<PermissionDef>,
    /// Topic permissions (kept as given).
    pub topic_permissions: Vec<Value>,
    /// Runtime parameters (`{component, vhost, name, value}`).
    pub parameters: Vec<Value>,
    /// Global parameters.
    pub global_parameters: Vec<Value>,
    /// Policies.
    pub policies: Vec<Value>,
    /// Operator policies (a FerryMQ addition; RabbitMQ's export leaves them out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operator_policies: Vec<Value>,
    /// Queues.
    pub queues: Vec<QueueDef>,
    /// Exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Bindings.
    pub bindings: Vec<BindingDef>,
}

/// Tags as a list; RabbitMQ before 3.9 wrote a comma-separated string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    /// `["administrator"]`
    List(Vec<String>),
    /// `"administrator,monitoring"`
    Joined(String),
}

impl Default for Tags {
    fn default() -> Self {
        Tags::List(Vec::new())
    }
}

impl Tags {
    /// The tags as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Tags::List(v) => v.clone(),
            Tags::Joined(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// A user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDef {
    /// Name.
    pub name: String,
    /// base64(salt ++ hash).
    #[serde(default)]
    pub password_hash: String,
    /// RabbitMQ hashing module name.
    #[serde(default = "default_hashing")]
    pub hashing_algorithm: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Per-user limits (kept as given).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub limits: Value,
}

fn default_vhost() -> String {
    "/".into()
}

fn default_hashing() -> String {
    "rabbit_password_hashing_sha256".into()
}

/// A vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VHostDef {
    /// Name.
    pub name: String,
    /// Metadata (description, tags), kept as given.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
    /// Limits, kept as given.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub limits: Value,
}

/// A user's permissions in a vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PermissionDef {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Configure regex.
    pub configure: String,
    /// Write regex.
    pub write: String,
    /// Read regex.
    pub read: String,
}

/// A queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// Vhost (a vhost-scoped export leaves it out: `/` until the importer sets it).
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Durable.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// Arguments as plain JSON.
    #[serde(default = "crate::json::empty_object")]
    pub arguments: Value,
}

fn yes() -> bool {
    true
}

/// An exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Vhost (a vhost-scoped export leaves it out: `/` until the importer sets it).
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Type name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// Internal.
    #[serde(default)]
    pub internal: bool,
    /// Arguments as plain JSON.
    #[serde(default = "crate::json::empty_object")]
    pub arguments: Value,
}

/// A binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Vhost (a vhost-scoped export leaves it out: `/` until the importer sets it).
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Destination name.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// Routing key.
    #[serde(default)]
    pub routing_key: String,
    /// Arguments as plain JSON.
    #[serde(default = "crate::json::empty_object")]
    pub arguments: Value,
}
