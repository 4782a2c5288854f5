//! A deliberately naive model of the same semantics, for the randomized test: every sync
//! copies whole contents and whole entry maps, nothing is ever freed. The real model
//! (dirty ranges, truncation watermarks, reference counts) must agree with it.

use std::collections::{BTreeMap, HashMap};

use super::Node;

#[derive(Debug, Clone)]
enum RNode {
    File {
        cur: Vec<u8>,
        dur: Vec<u8>,
    },
    Dir {
        cur: BTreeMap<String, u64>,
        dur: BTreeMap<String, u64>,
    },
}

/// The naive model; paths are `/`-separated, relative to the root ("" is the root).
#[derive(Debug)]
pub struct Reference {
    nodes: HashMap<u64, RNode>,
    next: u64,
}

const ROOT: u64 = 0;

impl Reference {
    pub fn new() -> Reference {
        Reference {
            nodes: HashMap::from([(
                ROOT,
                RNode::Dir {
                    cur: BTreeMap::new(),
                    dur: BTreeMap::new(),
                },
            )]),
            next: 1,
        }
    }

    pub fn resolve(&self, path: &str) -> Option<u64> {
        let mut at = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match &self.nodes[&at] {
                RNode::Dir { cur, .. } => at = *cur.get(part)?,
                RNode::File { .. } => return None,
            }
        }
        Some(at)
    }

    fn split(path: &str) -> (&str, &str) {
        path.rsplit_once('/').unwrap_or(("", path))
    }

    fn entries(&mut self, dir: u64) -> Option<&mut BTreeMap<String, u64>> {
        match self.nodes.get_mut(&dir)? {
            RNode::Dir { cur, .. } => Some(cur),
            RNode::File { .. } => None,
        }
    }

    fn add(&mut self, path: &str, node: RNode) -> bool {
        let (parent, name) = Self::split(path);
        let Some(p) = self.resolve(parent) else {
            return false;
        };
        let id = self.next;
        match self.entries(p) {
            Some(e) if !e.contains_key(name) => {
                e.insert(name.to_string(), id);
            }
            _ => return false,
        }
        self.next += 1;
        self.nodes.insert(id, node);
        true
    }

    pub fn create(&mut self, path: &str) -> bool {
        self.add(
            path,
            RNode::File {
                cur: Vec::new(),
                dur: Vec::new(),
            },
        )
    }

    pub fn mkdir(&mut self, path: &str) -> bool {
        self.add(
            path,
            RNode::Dir {
                cur: BTreeMap::new(),
                dur: BTreeMap::new(),
            },
        )
    }

    pub fn write(&mut self, path: &str, off: usize, data: &[u8]) -> bool {
        let Some(id) = self.resolve(path) else {
            return false;
        };
        let RNode::File { cur, .. } = self.nodes.get_mut(&id).unwrap() else {
            return false;
        };
        if cur.len() < off + data.len() {
            cur.resize(off + data.len(), 0);
        }
        cur[off..off + data.len()].copy_from_slice(data);
        true
    }

    pub fn truncate(&mut self, path: &str, len: usize) -> bool {
        let Some(id) = self.resolve(path) else {
            return false;
        };
        let RNode::File { cur, .. } = self.nodes.get_mut(&id).unwrap() else {
            return false;
        };
        cur.resize(len, 0);
        true
    }

    pub fn sync(&mut self, path: &str) -> bool {
        let Some(id) = self.resolve(path) else {
            return false;
        };
        match self.nodes.get_mut(&id).unwrap() {
            RNode::File { cur, dur } => *dur = cur.clone(),
            RNode::Dir { cur, dur } => *dur = cur.clone(),
        }
        true
    }

    pub fn unlink(&mut self, path: &str) -> bool {
        let (parent, name) = Self::split(path);
        let (Some(p), Some(id)) = (self.resolve(parent), self.resolve(path)) else {
            return false;
        };
        if !matches!(self.nodes[&id], RNode::File { .. }) || path.is_empty() {
            return false;
        }
        self.entries(p).unwrap().remove(name);
        true
    }

    pub fn rmdir(&mut self, path: &str) -> bool {
        let (parent, name) = Self::split(path);
        let (Some(p), Some(id)) = (self.resolve(parent), self.resolve(path)) else {
            return false;
        };
        match &self.nodes[&id] {
            RNode::Dir { cur, .. } if cur.is_empty() && !path.is_empty() => {}
            _ => return false,
        }
        self.entries(p).unwrap().remove(name);
        true
    }

    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        let (fp, fname) = Self::split(from);
        let (tp, tname) = Self::split(to);
        let (Some(fpi), Some(id), Some(tpi)) =
            (self.resolve(fp), self.resolve(from), self.resolve(tp))
        else {
            return false;
        };
        if from.is_empty() || !matches!(self.nodes[&tpi], RNode::Dir { .. }) {
            return false;
        }
        let is_dir = matches!(self.nodes[&id], RNode::Dir { .. });
        if is_dir && (to == from || to.starts_with(&format!("{from}/"))) {
            return to == from;
        }
        if let Some(old) = self.resolve(to) {
            if old == id {
                return true;
            }
            match (&self.nodes[&id], &self.nodes[&old]) {
                (RNode::File { .. }, RNode::File { .. }) => {}
                (RNode::Dir { .. }, RNode::Dir { cur, .. }) if cur.is_empty() => {}
                _ => return false,
            }
        }
        self.entries(fpi).unwrap().remove(fname);
        self.entries(tpi).unwrap().insert(tname.to_string(), id);
        true
    }

    fn tree(&self, durable: bool) -> BTreeMap<String, Node> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), ROOT, vec![ROOT])];
        while let Some((path, dir, above)) = stack.pop() {
            let RNode::Dir { cur, dur } = &self.nodes[&dir] else {
                continue;
            };
            for (name, id) in if durable { dur } else { cur } {
                if above.contains(id) {
                    continue;
                }
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                match &self.nodes[id] {
                    RNode::File { cur, dur } => {
                        out.insert(
                            p,
                            Node::File(if durable { dur.clone() } else { cur.clone() }),
                        );
                    }
                    RNode::Dir { .. } => {
                        out.insert(p.clone(), Node::Dir);
                        let mut above = above.clone();
                        above.push(*id);
                        stack.push((p, *id, above));
                    }
                }
            }
        }
        out
    }

    pub fn durable_tree(&self) -> BTreeMap<String, Node> {
        self.tree(true)
    }

    pub fn current_tree(&self) -> BTreeMap<String, Node> {
        self.tree(false)
    }
}
