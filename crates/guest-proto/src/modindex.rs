//! The module index of banger's modules disk: which kernel modules the guest can load,
//! where their files are, what each depends on, and the aliases the kernel asks for.
//!
//! The host (`banger-kernel`) writes it as `modules.banger` at the top of the disk, which
//! the agent mounts at `/lib/modules/<release>`; the agent, run as the kernel's
//! `modprobe` helper, reads it to load a module by name or alias. It replaces kmod's
//! binary indexes (`modules.dep.bin`, `modules.alias.bin`), which only `depmod` writes and
//! which would be useless anyway in images without kmod (most container images).
//!
//! Format: UTF-8 text, one record per line, fields separated by one space; names and
//! patterns never contain whitespace (records that would are left out when rendering).
//! ```text
//! banger-modules 1
//! m <name> <path relative to the disk> <dep,dep,…|->
//! b <name>                 (built into the kernel: nothing to load)
//! a <pattern> <name>       (kmod's alias glob: `*`, `?`, `[…]`)
//! ```
//! The guest reads a disk the host wrote, but a guest root could replace the file (or the
//! mount): the parser bounds what it keeps and never panics on any input.

use std::collections::{BTreeMap, BTreeSet};

/// The index's file name at the top of the modules disk.
pub const INDEX_FILE: &str = "modules.banger";
/// The agent's copy on the modules disk, run by the kernel as its `modprobe`.
pub const MODPROBE_FILE: &str = "banger-modprobe";
/// The first line.
const HEADER: &str = "banger-modules 1";
/// Records beyond this are ignored (a real kernel has ~6 000 modules and ~30 000 aliases).
const MAX_RECORDS: usize = 1 << 20;
/// Dependency chains deeper than this are refused (real ones are under 10).
const MAX_DEPTH: usize = 64;

/// One loadable module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its file, relative to the modules disk.
    pub path: String,
    /// Direct dependencies (normalized names).
    pub deps: Vec<String>,
}

/// The parsed index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModIndex {
    /// Loadable modules by normalized name.
    pub modules: BTreeMap<String, Entry>,
    /// Modules built into the kernel.
    pub builtin: BTreeSet<String>,
    /// `(pattern, module)` in file order.
    pub aliases: Vec<(String, String)>,
}

/// Why a module cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Neither a module, a built-in nor an alias of one.
    #[error("module {0} not found in the modules disk's index")]
    NotFound(String),
    /// A dependency cycle, or a chain too deep to be real.
    #[error("module {0}: its dependencies loop or nest more than {MAX_DEPTH} deep")]
    Cycle(String),
}

/// `-` and `_` are the same in module names; this spells them `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModIndex {
    /// The index's text.
    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\n");
        let plain = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
        for (name, e) in &self.modules {
            if !plain(name) || !plain(&e.path) || !e.deps.iter().all(|d| plain(d)) {
                continue;
            }
            let deps = if e.deps.is_empty() {
                "-".to_string()
            } else {
                e.deps.join(",")
            };
            out.push_str(&format!("m {name} {} {deps}\n", e.path));
        }
        for name in self.builtin.iter().filter(|n| plain(n)) {
            out.push_str(&format!("b {name}\n"));
        }
        for (pattern, name) in &self.aliases {
            if plain(pattern) && plain(name) {
                out.push_str(&format!("a {pattern} {name}\n"));
            }
        }
        out
    }

    /// Parses an index; `None` when the header is not this format's. Malformed records
    /// are skipped.
    pub fn parse(text: &str) -> Option<ModIndex> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut index = ModIndex::default();
        for line in lines.take(MAX_RECORDS) {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["m", name, path, deps] => {
                    let deps = match *deps {
                        "-" => Vec::new(),
                        d => d.split(',').map(normalize).collect(),
                    };
                    let path = path.to_string();
                    index.modules.insert(normalize(name), Entry { path, deps });
                }
                ["b", name] => {
                    index.builtin.insert(normalize(name));
                }
                ["a", pattern, name] => index.aliases.push((pattern.to_string(), normalize(name))),
                _ => {}
            }
        }
        Some(index)
    }

    /// The modules `wanted` names: itself when it is a module or a built-in, else every
    /// module with an alias matching it (as kmod's modprobe does, `-`/`_` equal).
    pub fn lookup(&self, wanted: &str) -> Vec<String> {
        let name = normalize(wanted);
        if self.modules.contains_key(&name) || self.builtin.contains(&name) {
            return vec![name];
        }
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            let matches = glob(pattern.as_bytes(), wanted.as_bytes())
                || glob(normalize(pattern).as_bytes(), name.as_bytes());
            if matches && !found.contains(module) {
                found.push(module.clone());
            }
        }
        found
    }

    /// What to load, in order (dependencies first, built-ins left out), to have `module`.
    pub fn load_order(&self, module: &str) -> Result<Vec<&Entry>, ResolveError> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        self.visit(&normalize(module), 0, &mut seen, &mut order)?;
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        depth: usize,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<&'a Entry>,
    ) -> Result<(), ResolveError> {
        if depth > MAX_DEPTH {
            return Err(ResolveError::Cycle(name.to_string()));
        }
        // Marked before its dependencies, so a cycle is cut where it closes.
        if self.builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        let entry = self
            .modules
            .get(name)
            .ok_or_else(|| ResolveError::NotFound(name.to_string()))?;
        for dep in &entry.deps {
            self.visit(dep, depth + 1, seen, order)?;
        }
        order.push(entry);
        Ok(())
    }
}

/// fnmatch(3) without flags, as kmod matches aliases: `*`, `?`, `[set]`, `[!set]`,
/// `[a-z]`. Iterative with one backtrack point, so linear-ish on any input.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unclosed `[` is a literal.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pattern` (`[…]`): whether it matched,
/// and the class's length; `None` when the class is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModIndex {
        let mut i = ModIndex::default();
        let m = |p: &str, d: &[&str]| Entry {
            path: p.into(),
            deps: d.iter().map(|s| s.to_string()).collect(),
        };
        i.modules.insert(
            "bridge".into(),
            m("kernel/net/bridge/bridge.ko", &["stp", "llc"]),
        );
        i.modules
            .insert("stp".into(), m("kernel/net/802/stp.ko", &["llc"]));
        i.modules
            .insert("llc".into(), m("kernel/net/llc/llc.ko", &[]));
        i.modules
            .insert("overlay".into(), m("kernel/fs/overlayfs/overlay.ko", &[]));
        i.builtin.insert("unix".into());
        i.aliases.push(("rtnl-link-bridge".into(), "bridge".into()));
        i.aliases.push(("fs-overlay".into(), "overlay".into()));
        i.aliases.push(("pci:v00001AF4d*sv*".into(), "llc".into()));
        i
    }

    #[test]
    fn round_trips_and_resolves_in_dependency_order() {
        let text = sample().render();
        let back = ModIndex::parse(&text).expect("parse");
        assert_eq!(back, sample());
        let order: Vec<&str> = back
            .load_order("bridge")
            .expect("order")
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "kernel/net/llc/llc.ko",
                "kernel/net/802/stp.ko",
                "kernel/net/bridge/bridge.ko"
            ]
        );
        assert!(back.load_order("unix").expect("builtin").is_empty());
        assert_eq!(back.lookup("rtnl-link-bridge"), ["bridge"]);
        assert_eq!(back.lookup("fs-overlay"), ["overlay"]);
        assert_eq!(back.lookup("pci:v00001AF4d00001000sv1"), ["llc"]);
        assert_eq!(back.lookup("over-lay"), Vec::<String>::new());
        assert_eq!(back.lookup("stp"), ["stp"]);
        assert!(matches!(
            back.load_order("nope"),
            Err(ResolveError::NotFound(n)) if n == "nope"
        ));
    }

    #[test]
    fn hostile_indexes_neither_panic_nor_loop() {
        assert_eq!(ModIndex::parse("not an index\nm a b -\n"), None);
        let loops = format!("{HEADER}\nm a a.ko b\nm b b.ko a\nm c c.ko c\n");
        let i = ModIndex::parse(&loops).expect("parse");
        // A cycle is cut where it closes: each module is loaded once.
        assert_eq!(i.load_order("a").expect("a").len(), 2);
        assert_eq!(i.load_order("c").expect("c").len(), 1);
        let junk = format!("{HEADER}\nm\nm  \na\n\u{0}\nb\nm x y z w v\n");
        assert!(ModIndex::parse(&junk).expect("junk").modules.is_empty());
        // Whitespace never reaches the file.
        let mut w = ModIndex::default();
        w.builtin.insert("a b".into());
        w.aliases.push(("x\ny".into(), "m".into()));
        assert_eq!(w.render(), format!("{HEADER}\n"));
    }

    #[test]
    fn deep_chains_are_refused() {
        let mut text = format!("{HEADER}\n");
        for n in 0..200 {
            text.push_str(&format!("m m{n} m{n}.ko m{}\n", n + 1));
        }
        let i = ModIndex::parse(&text).expect("parse");
        assert!(matches!(i.load_order("m0"), Err(ResolveError::Cycle(_))));
    }

    #[test]
    fn globs_as_fnmatch() {
        for (p, t, want) in [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a*c", "abbbc", true),
            ("a*", "a", true),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[ab]x", "bx", true),
            ("[!ab]x", "bx", false),
            ("[a-c]x", "cx", true),
            ("[a-c]x", "dx", false),
            ("[]]", "]", true),
            ("[ab", "[ab", true),
            ("*d*sv*", "pci:v1d2sv3", true),
            ("a*b*c*d", "aXbXcXe", false),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
        }
        // Many stars on a long text stay fast (one backtrack point).
        let text = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*b".as_bytes(), text.as_bytes()));
    }
}
