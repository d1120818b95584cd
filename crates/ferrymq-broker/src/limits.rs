//! Vhost and user limits, with RabbitMQ's names and storage so definitions move
//! between the brokers unchanged: a vhost's limits are the `vhost-limits` runtime
//! parameter named `limits` (`max-connections`, `max-queues`); a user's are kept on
//! the user (`max-connections`, `max-channels`). A negative value means no limit.

use serde_json::{Map, Value};

/// The runtime-parameter component holding vhost limits.
pub const VHOST_LIMITS: &str = "vhost-limits";
/// The parameter name RabbitMQ uses for a vhost's limits.
pub const VHOST_LIMITS_NAME: &str = "limits";
/// Limits a vhost may have.
pub const VHOST_KEYS: [&str; 2] = ["max-connections", "max-queues"];
/// Limits a user may have.
pub const USER_KEYS: [&str; 2] = ["max-connections", "max-channels"];

/// Checks a limits object: known keys, integer values.
pub fn validate(value: &Value, keys: &[&str]) -> Result<(), String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("limits must be a JSON object, not {value}"))?;
    for (k, v) in obj {
        if !keys.contains(&k.as_str()) {
            return Err(format!("unknown limit '{k}' (known: {})", keys.join(", ")));
        }
        if v.as_i64().is_none() {
            return Err(format!("limit '{k}' must be an integer, not {v}"));
        }
    }
    Ok(())
}

/// The limit `key` of a limits object; `None` when absent or negative (unlimited).
pub fn limit_of(limits: &Map<String, Value>, key: &str) -> Option<u64> {
    limits
        .get(key)?
        .as_i64()
        .and_then(|n| u64::try_from(n).ok())
}

/// Validator of the `vhost-limits` component.
pub fn vhost_validator(_vhost: &str, name: &str, value: &Value) -> Result<(), String> {
    if name != VHOST_LIMITS_NAME {
        return Err(format!(
            "vhost limits are the parameter named '{VHOST_LIMITS_NAME}', not '{name}'"
        ));
    }
    validate(value, &VHOST_KEYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_validate_and_negative_means_unlimited() {
        assert!(validate(&json!({"max-queues": 10}), &VHOST_KEYS).is_ok());
        assert!(validate(&json!({"max-queue": 10}), &VHOST_KEYS)
            .unwrap_err()
            .contains("unknown limit"));
        assert!(validate(&json!({"max-queues": "10"}), &VHOST_KEYS).is_err());
        let m = json!({"max-queues": 3, "max-connections": -1});
        let m = m.as_object().unwrap();
        assert_eq!(limit_of(m, "max-queues"), Some(3));
        assert_eq!(limit_of(m, "max-connections"), None);
        assert!(vhost_validator("/", "other", &json!({})).is_err());
    }
}
