//! Topic-exchange matching with RabbitMQ semantics: binding keys are dot-separated words
//! where `*` matches exactly one word and `#` matches zero or more words. Bindings live in a
//! trie keyed by word, so routing costs O(words × branching at wildcards), not a scan of
//! every binding.

use ahash::AHashMap;

#[derive(Debug)]
struct Node<D> {
    children: AHashMap<Box<str>, Node<D>>,
    star: Option<Box<Node<D>>>,
    hash: Option<Box<Node<D>>>,
    /// Destinations whose binding key ends at this node.
    leaves: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Node {
            children: AHashMap::new(),
            star: None,
            hash: None,
            leaves: Vec::new(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.leaves.is_empty()
    }
}

/// A set of `(binding key, destination)` pairs that can be matched against routing keys.
#[derive(Debug)]
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

/// Splits a key into words. As in RabbitMQ, the empty key has zero words (so it matches
/// `#` and the empty binding key, but not `*`).
fn words(key: &str) -> impl Iterator<Item = &str> {
    let n = if key.is_empty() { 0 } else { usize::MAX };
    key.split('.').take(n)
}

impl<D: PartialEq + Clone> TopicTrie<D> {
    /// Number of bindings held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a binding. The same pair may be added twice (bindings that differ only in
    /// arguments); each `remove` takes one away.
    pub fn insert(&mut self, pattern: &str, dest: D) {
        let mut node = &mut self.root;
        for w in words(pattern) {
            node = match w {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                _ => node.children.entry(w.into()).or_default(),
            };
        }
        node.leaves.push(dest);
        self.len += 1;
    }

    /// Removes a binding; returns false if it was not present.
    pub fn remove(&mut self, pattern: &str, dest: &D) -> bool {
        let ws: Vec<&str> = words(pattern).collect();
        let removed = Self::remove_at(&mut self.root, &ws, dest);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node<D>, ws: &[&str], dest: &D) -> bool {
        let Some((first, rest)) = ws.split_first() else {
            let Some(i) = node.leaves.iter().position(|d| d == dest) else {
                return false;
            };
            node.leaves.swap_remove(i);
            return true;
        };
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" {
                    &mut node.star
                } else {
                    &mut node.hash
                };
                let Some(child) = slot.as_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, dest);
                if child.is_empty() {
                    *slot = None;
                }
                removed
            }
            w => {
                let Some(child) = node.children.get_mut(w) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, dest);
                if child.is_empty() {
                    node.children.remove(w);
                }
                removed
            }
        }
    }

    /// Calls `out` for every destination whose binding key matches `routing_key`.
    /// A destination bound by several matching keys is reported once per key; callers
    /// de-duplicate.
    pub fn matches(&self, routing_key: &str, out: &mut impl FnMut(&D)) {
        let ws: Vec<&str> = words(routing_key).collect();
        Self::match_at(&self.root, &ws, out);
    }

    fn match_at(node: &Node<D>, ws: &[&str], out: &mut impl FnMut(&D)) {
        if let Some(hash) = &node.hash {
            // `#` swallows zero or more words: try every suffix.
            for i in 0..=ws.len() {
                Self::match_at(hash, &ws[i..], out);
            }
        }
        let Some((first, rest)) = ws.split_first() else {
            node.leaves.iter().for_each(&mut *out);
            return;
        };
        if let Some(child) = node.children.get(*first) {
            Self::match_at(child, rest, out);
        }
        if let Some(star) = &node.star {
            Self::match_at(star, rest, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bindings: &[&str], key: &str, expected: &[&str]) {
        let mut t = TopicTrie::default();
        for b in bindings {
            t.insert(b, b.to_string());
        }
        let mut got = Vec::new();
        t.matches(key, &mut |d: &String| got.push(d.clone()));
        got.sort();
        got.dedup();
        let mut exp: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        exp.sort();
        assert_eq!(got, exp, "routing key {key:?} against {bindings:?}");
    }

    #[test]
    fn rabbitmq_semantics() {
        let all = [
            "a.b.c", "a.*.c", "a.#", "#", "#.c", "*", "*.*", "a.#.c", "#.error", "a.*", "", "#.#",
            "a.b.#.#",
        ];
        check(
            &all,
            "a.b.c",
            &[
                "a.b.c", "a.*.c", "a.#", "#", "#.c", "a.#.c", "#.#", "a.b.#.#",
            ],
        );
        check(&all, "error", &["#", "*", "#.error", "#.#"]);
        check(&all, "a", &["a.#", "#", "*", "#.#"]);
        check(&all, "a.b", &["a.#", "#", "*.*", "a.*", "#.#", "a.b.#.#"]);
        check(&all, "", &["#", "", "#.#"]);
        check(&all, "a.x.y.c", &["a.#", "#", "#.c", "a.#.c", "#.#"]);
        check(&all, "x.error", &["#", "*.*", "#.error", "#.#"]);
        check(
            &all,
            "a.c",
            &["a.#", "#", "#.c", "*.*", "a.*", "a.#.c", "#.#"],
        );
    }

    #[test]
    fn insert_remove() {
        let mut t = TopicTrie::default();
        t.insert("a.*", 1);
        t.insert("a.*", 1);
        t.insert("a.*", 2);
        t.insert("#", 1);
        assert_eq!(t.len(), 4);
        assert!(t.remove("a.*", &1));
        assert!(t.remove("a.*", &1));
        assert!(!t.remove("a.*", &1));
        assert!(!t.remove("b.*", &1));
        let mut got = vec![];
        t.matches("a.b", &mut |d| got.push(*d));
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert!(t.remove("a.*", &2));
        assert!(t.remove("#", &1));
        assert!(t.is_empty());
        assert!(t.root.is_empty());
    }
}
