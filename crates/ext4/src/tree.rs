//! The in-memory namespace: nodes (directory entries) pointing at inodes. Children are
//! kept in ordered maps, so lookups are O(log n) and the final directory order is
//! deterministic (sorted by name bytes).

use std::collections::BTreeMap;

use crate::Metadata;
use crate::extent::Extent;
use crate::xattr::Attr;

pub type NodeId = usize;
pub type InodeId = usize;

pub enum Body {
    Dir,
    File {
        size: u64,
        extents: Vec<Extent>,
    },
    /// Targets of 60+ bytes live in one data block (`extents`).
    Symlink {
        target: Vec<u8>,
        extents: Vec<Extent>,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

pub struct InodeData {
    pub meta: Metadata,
    pub attrs: Vec<Attr>,
    pub body: Body,
}

impl InodeData {
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir)
    }
}

pub struct Node {
    pub inode: InodeId,
    /// Present exactly for directories.
    pub children: Option<BTreeMap<Vec<u8>, NodeId>>,
}

pub struct Tree {
    pub nodes: Vec<Node>,
    pub inodes: Vec<InodeData>,
}

pub const ROOT: NodeId = 0;

pub fn implicit_dir_meta() -> Metadata {
    Metadata {
        mode: 0o755,
        ..Metadata::default()
    }
}

impl Tree {
    pub fn new() -> Self {
        let mut t = Tree {
            nodes: Vec::new(),
            inodes: Vec::new(),
        };
        t.new_dir(implicit_dir_meta(), Vec::new());
        t
    }

    pub fn new_inode(&mut self, data: InodeData) -> InodeId {
        self.inodes.push(data);
        self.inodes.len() - 1
    }

    pub fn new_node(&mut self, inode: InodeId) -> NodeId {
        let children = self.inodes[inode].is_dir().then(BTreeMap::new);
        self.nodes.push(Node { inode, children });
        self.nodes.len() - 1
    }

    pub fn new_dir(&mut self, meta: Metadata, attrs: Vec<Attr>) -> NodeId {
        let ino = self.new_inode(InodeData {
            meta,
            attrs,
            body: Body::Dir,
        });
        self.new_node(ino)
    }

    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.nodes[dir].children.as_ref()?.get(name).copied()
    }

    /// Walks `components` from the root. `Err(())` when a non-directory is in the way.
    pub fn lookup(&self, components: &[&[u8]]) -> Result<Option<NodeId>, ()> {
        let mut cur = ROOT;
        for c in components {
            if self.nodes[cur].children.is_none() {
                return Err(());
            }
            match self.child(cur, c) {
                Some(n) => cur = n,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Walks `components`, creating missing directories with default metadata.
    pub fn ensure_dirs(&mut self, components: &[&[u8]]) -> Result<NodeId, ()> {
        let mut cur = ROOT;
        for c in components {
            cur = match self.child(cur, c) {
                Some(n) if self.nodes[n].children.is_some() => n,
                Some(_) => return Err(()),
                None => {
                    let n = self.new_dir(implicit_dir_meta(), Vec::new());
                    self.attach(cur, c, n);
                    n
                }
            };
        }
        Ok(cur)
    }

    /// Links `node` as `name` in `dir`, replacing (unlinking) whatever was there.
    pub fn attach(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        if let Some(children) = self.nodes[dir].children.as_mut() {
            children.insert(name.to_vec(), node);
        }
    }

    pub fn detach(&mut self, dir: NodeId, name: &[u8]) -> bool {
        self.nodes[dir]
            .children
            .as_mut()
            .is_some_and(|c| c.remove(name).is_some())
    }
}
