//! Runtime parameters (`/api/parameters/{component}/{vhost}/{name}`) and global
//! parameters: JSON values other modules own by component name. Federation
//! registers validators for `federation-upstream` and `federation-upstream-set`;
//! values of components nobody registered are kept verbatim (so a RabbitMQ
//! definitions file with, say, shovels imports without loss).

use parking_lot::RwLock;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Checks a parameter value of one component: `(vhost, name, value)`.
pub type Validator = Arc<dyn Fn(&str, &str, &Value) -> Result<(), String> + Send + Sync>;

/// Key of a runtime parameter: (component, vhost, name).
pub type ParamKey = (String, String, String);

/// The runtime and global parameters of a broker.
#[derive(Default)]
pub struct RuntimeParameters {
    values: RwLock<BTreeMap<ParamKey, Value>>,
    global: RwLock<BTreeMap<String, Value>>,
    validators: RwLock<HashMap<String, Validator>>,
}

impl RuntimeParameters {
    /// Registers the validator of a component (replacing an earlier one).
    pub fn register(&self, component: &str, validator: Validator) {
        self.validators
            .write()
            .insert(component.to_owned(), validator);
    }

    /// Whether a module registered the component.
    pub fn is_known(&self, component: &str) -> bool {
        self.validators.read().contains_key(component)
    }

    /// Validates a value; unknown components pass when `allow_unknown`.
    pub fn validate(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        value: &Value,
        allow_unknown: bool,
    ) -> Result<(), String> {
        let validator = self.validators.read().get(component).cloned();
        match validator {
            Some(v) => v(vhost, name, value),
            None if allow_unknown => Ok(()),
            None => Err(format!("component '{component}' not found")),
        }
    }

    /// Stores a value (validate first).
    pub fn put(&self, component: &str, vhost: &str, name: &str, value: Value) {
        self.values
            .write()
            .insert((component.into(), vhost.into(), name.into()), value);
    }

    /// Removes a value; returns whether it existed.
    pub fn delete(&self, component: &str, vhost: &str, name: &str) -> bool {
        self.values
            .write()
            .remove(&(component.into(), vhost.into(), name.into()))
            .is_some()
    }

    /// One value.
    pub fn get(&self, component: &str, vhost: &str, name: &str) -> Option<Value> {
        self.values
            .read()
            .get(&(component.into(), vhost.into(), name.into()))
            .cloned()
    }

    /// Values of a component in a vhost (either may be `None` for all), sorted by key.
    pub fn list(&self, component: Option<&str>, vhost: Option<&str>) -> Vec<(ParamKey, Value)> {
        self.values
            .read()
            .iter()
            .filter(|((c, v, _), _)| {
                component.is_none_or(|x| x == c) && vhost.is_none_or(|x| x == v)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Removes every parameter of a vhost (when it is deleted).
    pub fn delete_vhost(&self, vhost: &str) {
        self.values.write().retain(|(_, v, _), _| v != vhost);
    }

    /// Stores a global parameter.
    pub fn put_global(&self, name: &str, value: Value) {
        self.global.write().insert(name.into(), value);
    }

    /// Removes a global parameter.
    pub fn delete_global(&self, name: &str) -> bool {
        self.global.write().remove(name).is_some()
    }

    /// Global parameters, sorted by name.
    pub fn globals(&self) -> Vec<(String, Value)> {
        self.global
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// RabbitMQ's JSON shape of a runtime parameter.
pub fn parameter_json(key: &ParamKey, value: &Value) -> Value {
    json!({"component": key.0, "vhost": key.1, "name": key.2, "value": value})
}

/// RabbitMQ's JSON shape of a global parameter.
pub fn global_json(name: &str, value: &Value) -> Value {
    json!({"name": name, "value": value})
}
