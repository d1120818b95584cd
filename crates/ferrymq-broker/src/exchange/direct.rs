//! Direct exchange index: routing key → destinations.

use super::Destination;
use std::collections::HashMap;

/// Hash index from exact routing key to destinations.
#[derive(Default)]
pub(super) struct DirectIndex {
    by_key: HashMap<String, Vec<Destination>>,
}

impl DirectIndex {
    pub(super) fn add(&mut self, key: &str, dest: Destination) {
        self.by_key.entry(key.to_owned()).or_default().push(dest);
    }

    pub(super) fn remove(&mut self, key: &str, dest: &Destination) {
        if let Some(list) = self.by_key.get_mut(key) {
            if let Some(pos) = list.iter().position(|d| d.same(dest)) {
                list.remove(pos);
            }
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    pub(super) fn route(&self, key: &str, f: &mut dyn FnMut(&Destination)) {
        if let Some(list) = self.by_key.get(key) {
            list.iter().for_each(f);
        }
    }
}
