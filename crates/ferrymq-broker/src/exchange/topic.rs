//! Topic exchange index: a trie over dot-separated words.
//!
//! A trie makes routing cost depend on the routing key's length and the number of
//! wildcard branches, not on the number of bindings, so thousands of bindings stay cheap.

use super::Destination;
use std::collections::HashMap;

/// Trie node; `*` and `#` get dedicated children.
#[derive(Default)]
pub(super) struct TopicTrie {
    words: HashMap<String, TopicTrie>,
    star: Option<Box<TopicTrie>>,
    hash: Option<Box<TopicTrie>>,
    destinations: Vec<Destination>,
    /// Set on the root once any pattern used `#`: only then can a walk revisit a
    /// (node, position) pair, so only then is a visited set kept.
    any_hash: bool,
}

/// The words of a key or pattern; the empty string has none (as in RabbitMQ).
fn words_of(s: &str) -> impl Iterator<Item = &str> {
    s.split('.').filter(move |_| !s.is_empty())
}

/// The words of a binding pattern with runs of `#` collapsed to one: `#.#` means
/// the same as `#`, and each extra `#` would multiply the routing walk.
fn pattern_words(pattern: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for w in words_of(pattern) {
        if w == "#" && out.last() == Some(&"#") {
            continue;
        }
        out.push(w);
    }
    out
}

impl TopicTrie {
    pub(super) fn add(&mut self, pattern: &str, dest: Destination) {
        self.any_hash |= pattern_words(pattern).contains(&"#");
        let mut node = self;
        for word in pattern_words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.words.entry(w.to_owned()).or_default(),
            };
        }
        node.destinations.push(dest);
    }

    pub(super) fn remove(&mut self, pattern: &str, dest: &Destination) {
        let words = pattern_words(pattern);
        self.remove_at(&words, dest);
    }

    /// Removes and prunes empty branches; returns whether this node is now empty.
    fn remove_at(&mut self, words: &[&str], dest: &Destination) -> bool {
        match words.split_first() {
            None => {
                if let Some(pos) = self.destinations.iter().position(|d| d.same(dest)) {
                    self.destinations.remove(pos);
                }
            }
            Some((&"*", rest)) => {
                if let Some(child) = self.star.as_mut() {
                    if child.remove_at(rest, dest) {
                        self.star = None;
                    }
                }
            }
            Some((&"#", rest)) => {
                if let Some(child) = self.hash.as_mut() {
                    if child.remove_at(rest, dest) {
                        self.hash = None;
                    }
                }
            }
            Some((w, rest)) => {
                if let Some(child) = self.words.get_mut(*w) {
                    if child.remove_at(rest, dest) {
                        self.words.remove(*w);
                    }
                }
            }
        }
        self.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.destinations.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    pub(super) fn route(&self, key: &str, f: &mut dyn FnMut(&Destination)) {
        let words: Vec<&str> = words_of(key).collect();
        // With `#` a walk can reach the same node at the same word position along many
        // paths; remembering visited pairs keeps it to nodes × words. The caller
        // de-duplicates queues reached through different nodes.
        let mut seen = self.any_hash.then(std::collections::HashSet::new);
        self.walk(&words, &mut seen, f);
    }

    fn walk(
        &self,
        words: &[&str],
        seen: &mut Option<std::collections::HashSet<(usize, usize)>>,
        f: &mut dyn FnMut(&Destination),
    ) {
        if let Some(seen) = seen.as_mut() {
            // The remaining length identifies the position in the key.
            if !seen.insert((self as *const Self as usize, words.len())) {
                return;
            }
        }
        if let Some(hash) = &self.hash {
            // `#` matches zero or more words: try every split point.
            for i in 0..=words.len() {
                hash.walk(&words[i..], seen, f);
            }
        }
        match words.split_first() {
            None => self.destinations.iter().for_each(f),
            Some((word, rest)) => {
                if let Some(child) = self.words.get(*word) {
                    child.walk(rest, seen, f);
                }
                if let Some(star) = &self.star {
                    star.walk(rest, seen, f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut t = TopicTrie::default();
        t.add(pattern, Destination::Exchange("d".into()));
        let mut hit = false;
        t.route(key, &mut |_| hit = true);
        hit
    }

    #[test]
    fn wildcards() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(matches("#", ""));
        assert!(matches("#", "x.y"));
        assert!(matches("#.c", "c"));
        assert!(matches("a.#.c", "a.c"));
        assert!(matches("a.#.c", "a.b.b.c"));
        assert!(!matches("a.#.c", "a.b.d"));
        assert!(matches("*", "x"));
        assert!(!matches("*", "x.y"));
        assert!(!matches("*", ""));
        assert!(matches("", ""));
        assert!(matches("*.#", "x"));
    }

    #[test]
    fn repeated_hashes_are_cheap_and_equivalent() {
        let pattern = vec!["#"; 40].join(".");
        let key = vec!["w"; 200].join(".");
        let started = std::time::Instant::now();
        assert!(matches(&pattern, &key));
        assert!(matches("a.#.#.b", "a.b"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let mut t = TopicTrie::default();
        let d = Destination::Exchange("d".into());
        t.add("#.#.x", d.clone());
        t.remove("#.#.x", &d);
        assert!(t.is_empty());
    }

    #[test]
    fn alternating_wildcards_stay_polynomial() {
        let pattern = ["#", "*"].repeat(20).join(".");
        let key = vec!["w"; 120].join(".");
        let started = std::time::Instant::now();
        assert!(matches(&pattern, &key));
        assert!(!matches(&format!("{pattern}.z"), &key));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn remove_prunes() {
        let mut t = TopicTrie::default();
        let d = Destination::Exchange("d".into());
        t.add("a.*.#", d.clone());
        t.remove("a.*.#", &d);
        assert!(t.is_empty());
    }
}
