//! Policies and operator policies: settings matched to queues and exchanges by a
//! regex over their names, applied live. Merge rules follow RabbitMQ: for limits
//! (lengths, TTLs, expiry) the smallest of argument, policy and operator policy
//! wins; for the other keys a declared argument wins over the policy.

use crate::queue_args::{Overflow, QueueArgs};
use parking_lot::RwLock;
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Which objects a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Queues and exchanges.
    All,
    /// Queues only.
    Queues,
    /// Exchanges only.
    Exchanges,
}

impl ApplyTo {
    /// RabbitMQ's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
        }
    }
}

/// The kind of object a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

/// Keys a policy definition may hold, and whether FerryMQ acts on them.
const POLICY_KEYS: &[&str] = &[
    "max-length",
    "max-length-bytes",
    "overflow",
    "message-ttl",
    "expires",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "alternate-exchange",
    "federation-upstream",
    "federation-upstream-set",
    // Every FerryMQ queue pages to disk already, so "lazy" is what it gets anyway.
    "queue-mode",
];

/// Keys an operator policy may hold: limits only, as in RabbitMQ.
const OPERATOR_POLICY_KEYS: &[&str] = &["max-length", "max-length-bytes", "message-ttl", "expires"];

/// A policy (or operator policy).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Vhost it lives in.
    pub vhost: String,
    /// Policy name.
    pub name: String,
    /// The regex as given.
    pub pattern: String,
    regex: Regex,
    /// Which objects it applies to.
    pub apply_to: ApplyTo,
    /// Highest priority wins.
    pub priority: i64,
    /// The definition as given (unknown keys included).
    pub definition: Map<String, Value>,
}

/// A parsed policy and the keys it holds that FerryMQ ignores.
pub type Parsed = (Policy, Vec<String>);

impl Policy {
    /// Parses the body of `PUT /api/policies/{vhost}/{name}` (or a definitions entry).
    /// Unknown definition keys are kept and returned as warnings; malformed values
    /// are errors that name the key.
    pub fn parse(vhost: &str, name: &str, body: &Value, operator: bool) -> Result<Parsed, String> {
        let obj = body
            .as_object()
            .ok_or_else(|| "policy must be a JSON object".to_string())?;
        let pattern = obj
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| "pattern is required (a string)".to_string())?;
        let regex = Regex::new(pattern).map_err(|e| format!("invalid pattern '{pattern}': {e}"))?;
        let apply_to = match obj.get("apply-to").map(|v| v.as_str()) {
            None | Some(Some("all")) => ApplyTo::All,
            Some(Some("queues")) => ApplyTo::Queues,
            Some(Some("exchanges")) => ApplyTo::Exchanges,
            Some(other) => {
                return Err(format!(
                    "apply-to must be all, queues or exchanges, not {}",
                    other
                        .map(String::from)
                        .unwrap_or_else(|| "a non-string".into())
                ))
            }
        };
        if operator && apply_to == ApplyTo::Exchanges {
            return Err("operator policies apply to queues only".into());
        }
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| format!("priority must be an integer, not {v}"))?,
        };
        let definition = match obj.get("definition") {
            Some(Value::Object(m)) => m.clone(),
            // rabbitmqadmin and some tools send the definition as a JSON string.
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => m,
                _ => return Err(format!("definition must be a JSON object, not {s:?}")),
            },
            _ => return Err("definition is required (a JSON object)".into()),
        };
        if definition.is_empty() {
            return Err("definition must not be empty".into());
        }
        let known = if operator {
            OPERATOR_POLICY_KEYS
        } else {
            POLICY_KEYS
        };
        let mut ignored = Vec::new();
        for (key, value) in &definition {
            if !known.contains(&key.as_str()) {
                if operator {
                    return Err(format!("'{key}' is not allowed in an operator policy"));
                }
                ignored.push(key.clone());
                continue;
            }
            validate_key(key, value)?;
        }
        if definition.contains_key("federation-upstream")
            && definition.contains_key("federation-upstream-set")
        {
            return Err(
                "federation-upstream and federation-upstream-set cannot be used together".into(),
            );
        }
        Ok((
            Policy {
                vhost: vhost.into(),
                name: name.into(),
                pattern: pattern.into(),
                regex,
                apply_to,
                priority,
                definition,
            },
            ignored,
        ))
    }

    /// RabbitMQ's JSON shape (`GET /api/policies`, definitions export).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }

    /// Whether the policy applies to an object of `target` kind called `name`.
    pub fn matches(&self, target: Target, name: &str) -> bool {
        let kind_ok = matches!(
            (self.apply_to, target),
            (ApplyTo::All, _)
                | (ApplyTo::Queues, Target::Queue)
                | (ApplyTo::Exchanges, Target::Exchange)
        );
        kind_ok && self.regex.is_match(name)
    }

    /// A definition value as a non-negative integer.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.definition.get(key).and_then(Value::as_u64)
    }

    /// A definition value as a string.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.definition.get(key).and_then(Value::as_str)
    }
}

fn validate_key(key: &str, value: &Value) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{key} must be {what}, not {value}"));
    match key {
        "max-length" | "max-length-bytes" | "message-ttl" => {
            if value.as_u64().is_none() {
                return bad("a non-negative integer");
            }
        }
        "expires" => {
            if value.as_u64().is_none_or(|n| n == 0) {
                return bad("a positive integer");
            }
        }
        "overflow" => {
            if value.as_str().and_then(Overflow::parse).is_none() {
                return bad("drop-head, reject-publish or reject-publish-dlx");
            }
        }
        "queue-mode" => {
            if !matches!(value.as_str(), Some("default" | "lazy")) {
                return bad("default or lazy");
            }
        }
        _ => {
            if value.as_str().is_none_or(str::is_empty) {
                return bad("a non-empty string");
            }
        }
    }
    Ok(())
}

/// Picks the policy that applies to an object: highest priority, then the name that
/// sorts first (so the choice does not depend on the order policies were added).
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a Arc<Policy>>,
    target: Target,
    name: &str,
) -> Option<Arc<Policy>> {
    policies
        .into_iter()
        .filter(|p| p.matches(target, name))
        .min_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        })
        .cloned()
}

/// The policy and operator policy applied to a queue or exchange.
#[derive(Debug, Default, Clone)]
pub struct AppliedPolicies {
    /// The user policy that matched.
    pub policy: Option<Arc<Policy>>,
    /// The operator policy that matched.
    pub operator_policy: Option<Arc<Policy>>,
}

impl AppliedPolicies {
    /// The merged definition RabbitMQ reports as `effective_policy_definition`:
    /// the policy's keys, with operator limits taking the smaller value.
    pub fn effective_definition(&self) -> Map<String, Value> {
        let mut out = self
            .policy
            .as_ref()
            .map(|p| p.definition.clone())
            .unwrap_or_default();
        if let Some(op) = &self.operator_policy {
            for (k, v) in &op.definition {
                let smaller = match (out.get(k).and_then(Value::as_u64), v.as_u64()) {
                    (Some(a), Some(b)) => Value::from(a.min(b)),
                    _ => v.clone(),
                };
                out.insert(k.clone(), smaller);
            }
        }
        out
    }

    /// Whether nothing applies.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.operator_policy.is_none()
    }
}

fn min_of(values: [Option<u64>; 3]) -> Option<u64> {
    values.into_iter().flatten().min()
}

/// Declared queue arguments merged with the applied policies.
pub fn effective_queue_args(declared: &QueueArgs, applied: &AppliedPolicies) -> QueueArgs {
    let p = applied.policy.as_deref();
    let op = applied.operator_policy.as_deref();
    let num = |key: &str, declared: Option<u64>| {
        min_of([
            declared,
            p.and_then(|p| p.uint(key)),
            op.and_then(|p| p.uint(key)),
        ])
    };
    let mut args = declared.clone();
    args.max_length = num("max-length", declared.max_length);
    args.max_length_bytes = num("max-length-bytes", declared.max_length_bytes);
    args.message_ttl = num("message-ttl", declared.message_ttl);
    args.expires = num("expires", declared.expires);
    if let Some(p) = p {
        if !declared.overflow_declared {
            if let Some(o) = p.string("overflow").and_then(Overflow::parse) {
                args.overflow = o;
            }
        }
        if declared.dead_letter_exchange.is_none() {
            args.dead_letter_exchange = p.string("dead-letter-exchange").map(String::from);
        }
        if declared.dead_letter_routing_key.is_none() {
            args.dead_letter_routing_key = p.string("dead-letter-routing-key").map(String::from);
        }
    }
    args
}

/// The policies of a broker, all vhosts, both kinds.
#[derive(Default)]
pub struct PolicyStore {
    user: RwLock<Vec<Arc<Policy>>>,
    operator: RwLock<Vec<Arc<Policy>>>,
}

impl PolicyStore {
    fn kind(&self, operator: bool) -> &RwLock<Vec<Arc<Policy>>> {
        if operator {
            &self.operator
        } else {
            &self.user
        }
    }

    /// Adds or replaces a policy (same vhost and name).
    pub fn put(&self, policy: Policy, operator: bool) {
        let mut list = self.kind(operator).write();
        list.retain(|p| !(p.vhost == policy.vhost && p.name == policy.name));
        list.push(Arc::new(policy));
    }

    /// Removes a policy; returns whether it existed.
    pub fn delete(&self, vhost: &str, name: &str, operator: bool) -> bool {
        let mut list = self.kind(operator).write();
        let before = list.len();
        list.retain(|p| !(p.vhost == vhost && p.name == name));
        list.len() != before
    }

    /// Removes every policy of a vhost.
    pub fn delete_vhost(&self, vhost: &str) {
        self.user.write().retain(|p| p.vhost != vhost);
        self.operator.write().retain(|p| p.vhost != vhost);
    }

    /// One policy.
    pub fn get(&self, vhost: &str, name: &str, operator: bool) -> Option<Arc<Policy>> {
        self.kind(operator)
            .read()
            .iter()
            .find(|p| p.vhost == vhost && p.name == name)
            .cloned()
    }

    /// Policies of one kind, in one vhost or all, sorted by vhost and name.
    pub fn list(&self, operator: bool, vhost: Option<&str>) -> Vec<Arc<Policy>> {
        let mut out: Vec<_> = self
            .kind(operator)
            .read()
            .iter()
            .filter(|p| vhost.is_none_or(|v| v == p.vhost))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        out
    }

    /// What applies to the object `name` of kind `target` in `vhost`.
    pub fn applied(&self, vhost: &str, target: Target, name: &str) -> AppliedPolicies {
        let pick = |list: &RwLock<Vec<Arc<Policy>>>| {
            let list = list.read();
            select(list.iter().filter(|p| p.vhost == vhost), target, name)
        };
        AppliedPolicies {
            policy: pick(&self.user),
            operator_policy: if target == Target::Queue {
                pick(&self.operator)
            } else {
                None
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, body: Value) -> Arc<Policy> {
        Arc::new(Policy::parse("/", name, &body, false).unwrap().0)
    }

    #[test]
    fn highest_priority_wins_then_name() {
        let a = policy(
            "a",
            json!({"pattern": "^m", "definition": {"max-length": 1}, "priority": 1}),
        );
        let b = policy(
            "b",
            json!({"pattern": "^m", "definition": {"max-length": 2}, "priority": 5}),
        );
        let c = policy(
            "c",
            json!({"pattern": "^m", "definition": {"max-length": 3}, "priority": 5}),
        );
        let all = [a, c, b];
        assert_eq!(select(&all, Target::Queue, "metric").unwrap().name, "b");
        assert!(select(&all, Target::Queue, "x").is_none());
    }

    #[test]
    fn apply_to_filters_kinds() {
        let q = policy(
            "q",
            json!({"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "queues"}),
        );
        assert!(q.matches(Target::Queue, "x"));
        assert!(!q.matches(Target::Exchange, "x"));
    }

    #[test]
    fn unknown_keys_are_kept_and_reported() {
        let (p, ignored) = Policy::parse(
            "/",
            "p",
            &json!({"pattern": ".", "definition": {"ha-mode": "all", "max-length": 3}}),
            false,
        )
        .unwrap();
        assert_eq!(ignored, vec!["ha-mode".to_string()]);
        assert!(p.definition.contains_key("ha-mode"));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (def, key) in [
            (json!({"max-length": -1}), "max-length"),
            (json!({"overflow": "nope"}), "overflow"),
            (json!({"expires": 0}), "expires"),
            (json!({"dead-letter-exchange": 5}), "dead-letter-exchange"),
        ] {
            let e = Policy::parse("/", "p", &json!({"pattern": ".", "definition": def}), false)
                .unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        assert!(Policy::parse(
            "/",
            "p",
            &json!({"pattern": "(", "definition": {"max-length": 1}}),
            false
        )
        .is_err());
        assert!(Policy::parse(
            "/",
            "p",
            &json!({"pattern": ".", "definition": {"overflow": "drop-head"}}),
            true
        )
        .is_err());
    }

    #[test]
    fn limits_take_the_minimum_and_arguments_win_otherwise() {
        let declared = QueueArgs {
            max_length: Some(100),
            dead_letter_exchange: Some("declared".into()),
            ..Default::default()
        };
        let applied = AppliedPolicies {
            policy: Some(policy(
                "p",
                json!({"pattern": ".", "definition": {"max-length": 10, "message-ttl": 5000, "dead-letter-exchange": "pol"}}),
            )),
            operator_policy: Some(Arc::new(
                Policy::parse(
                    "/",
                    "o",
                    &json!({"pattern": ".", "definition": {"message-ttl": 1000}}),
                    true,
                )
                .unwrap()
                .0,
            )),
        };
        let args = effective_queue_args(&declared, &applied);
        assert_eq!(args.max_length, Some(10));
        assert_eq!(args.message_ttl, Some(1000));
        assert_eq!(args.dead_letter_exchange.as_deref(), Some("declared"));
        assert_eq!(applied.effective_definition()["message-ttl"], json!(1000));
        let none = effective_queue_args(&declared, &AppliedPolicies::default());
        assert_eq!(none, declared);
    }
}
