//! Keeps the daemon's module graph a DAG (crates/daemon/README.md says it is one): reads
//! `src/`, finds which file module names which (`crate::…`, `super::…`, `self::…`; a
//! `pub use` re-export is followed to the module that defines the item), and fails on any
//! cycle, naming it; then again with each top-level module and its children as one node.
//! A module's references to its own descendants are left out: a parent
//! declares, re-exports and dispatches to its children, who may use its types. Comments
//! and inline test modules are ignored.
//!
//! `BANGER_MODULE_DAG_SRC=<dir>` checks another source tree (to see the check fail on
//! an old one).

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type ModPath = Vec<String>;

struct FileModule {
    text: String,
    /// Child modules declared with `mod x;`.
    children: BTreeSet<String>,
    /// `pub use` items: name → module path (absolute) it comes from.
    reexports: BTreeMap<String, ModPath>,
}

fn collect(dir: &Path, prefix: &ModPath, out: &mut BTreeMap<ModPath, FileModule>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.clone();
            p.push(name);
            collect(&path, &p, out);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let mut module = prefix.clone();
        if !(stem == "mod" || (stem == "lib" && prefix.is_empty())) {
            module.push(stem.to_string());
        }
        let text = code_of(&std::fs::read_to_string(&path).expect("read module"));
        out.insert(
            module,
            FileModule {
                text,
                children: BTreeSet::new(),
                reexports: BTreeMap::new(),
            },
        );
    }
}

/// The source without comments and without a trailing `#[cfg(test)] mod tests { … }`.
fn code_of(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `::`-separated identifiers starting at `s` (stops at anything else, `{` included).
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The paths named at `s`: a plain path, or the items of a `{…}` group.
fn paths_at(s: &str) -> Vec<Vec<String>> {
    let base = segments(s);
    let consumed: usize = base.iter().map(|b| b.len() + 2).sum();
    match s.get(consumed..).filter(|r| r.starts_with('{')) {
        Some(group) => {
            let (mut depth, mut end) = (0, group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &group[1..end];
            let mut items = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            items
                .into_iter()
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .flat_map(|item| {
                    paths_at(item).into_iter().map(|p| {
                        let mut full = base.clone();
                        full.extend(p);
                        full
                    })
                })
                .collect()
        }
        None => vec![base],
    }
}

/// Every occurrence of `prefix` in `text` not preceded by an identifier character or `::`.
fn occurrences<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(prefix) {
        let at = from + i;
        let before = &text[..at];
        let standalone =
            !before.ends_with("::") && !before.chars().next_back().is_some_and(is_ident);
        if standalone {
            out.push(&text[at + prefix.len()..]);
        }
        from = at + prefix.len();
    }
    out
}

/// Absolute paths named by `module`'s code.
fn named_paths(module: &ModPath, file: &FileModule) -> Vec<ModPath> {
    let parent: ModPath = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for rest in occurrences(&file.text, "crate::") {
        out.extend(paths_at(rest));
    }
    for rest in occurrences(&file.text, "super::") {
        out.extend(paths_at(rest).into_iter().map(|p| {
            let mut full = parent.clone();
            full.extend(p);
            full
        }));
    }
    let mut relative = vec!["self::".to_string()];
    relative.extend(file.children.iter().map(|c| format!("{c}::")));
    for prefix in relative {
        let child = prefix.strip_suffix("::").filter(|c| *c != "self");
        for rest in occurrences(&file.text, &prefix) {
            for p in paths_at(rest) {
                let mut full = module.clone();
                full.extend(child.map(str::to_string));
                full.extend(p);
                out.push(full);
            }
        }
    }
    out
}

/// The file module a path lands in: its longest module prefix, then through a re-export.
fn resolve(path: &[String], modules: &BTreeMap<ModPath, FileModule>) -> Option<ModPath> {
    let mut seen = 0;
    let mut path = path.to_vec();
    loop {
        let n = (0..=path.len())
            .rev()
            .find(|n| modules.contains_key(&path[..*n]))?;
        let target = path[..n].to_vec();
        let Some(item) = path.get(n) else {
            return Some(target);
        };
        match modules[&target].reexports.get(item) {
            Some(from) if seen < 8 => {
                seen += 1;
                let mut next = from.clone();
                next.extend(path[n..].iter().cloned());
                path = next;
            }
            _ => return Some(target),
        }
    }
}

fn module_graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let src = std::env::var_os("BANGER_MODULE_DAG_SRC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut modules = BTreeMap::new();
    collect(&src, &Vec::new(), &mut modules);
    let names: Vec<ModPath> = modules.keys().cloned().collect();
    for module in &names {
        let children: BTreeSet<String> = names
            .iter()
            .filter(|n| n.len() == module.len() + 1 && n.starts_with(module))
            .map(|n| n[module.len()].clone())
            .collect();
        let file = modules.get_mut(module).unwrap();
        file.children = children;
        // `pub use a::b::{c, d};` → c, d come from a::b (relative to this module).
        let mut reexports = BTreeMap::new();
        for rest in occurrences(&file.text, "pub use ") {
            let rest = rest.trim_start();
            for p in paths_at(rest) {
                let Some((item, from)) = p.split_last() else {
                    continue;
                };
                let mut abs = match from.first().map(String::as_str) {
                    Some("crate") => from[1..].to_vec(),
                    Some("self") => [module.clone(), from[1..].to_vec()].concat(),
                    Some("super") => {
                        [module[..module.len() - 1].to_vec(), from[1..].to_vec()].concat()
                    }
                    Some(c) if file.children.contains(c) => {
                        [module.clone(), from.to_vec()].concat()
                    }
                    _ => continue,
                };
                if item == "self" {
                    continue;
                }
                abs.shrink_to_fit();
                reexports.insert(item.clone(), abs);
            }
        }
        file.reexports = reexports;
    }
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, file) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for path in named_paths(module, file) {
            if let Some(target) = resolve(&path, &modules)
                && !target.starts_with(module)
                && !target.is_empty()
            {
                edges.insert(target);
            }
        }
    }
    graph
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

/// Some cycle of the graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in graph.keys() {
        if let Some(c) = visit(m, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_daemon_module_graph_is_a_dag() {
    let graph = module_graph();
    // The check itself works: it sees edges we know exist.
    let edge = |a: &str, b: &str| {
        let p = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
        graph.get(&p(a)).is_some_and(|e| e.contains(&p(b)))
    };
    assert!(edge("pull", "kernels::choice"), "{graph:?}");
    assert!(
        edge("kernels::content_store", "kernels::choice"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let path: Vec<String> = cycle.iter().map(show).collect();
        panic!(
            "crates/daemon's modules import each other in a circle: {}; move what they share into a leaf module",
            path.join(" → ")
        );
    }
}

/// The graph with each top-level module and its descendants as one node: a child of `a`
/// that names `b` while a child of `b` names `a` is a circle too, at the level a reader
/// of `lib.rs` sees.
fn top_level(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let top = |m: &ModPath| m.iter().take(1).cloned().collect::<ModPath>();
    let mut out: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, targets) in graph {
        let edges = out.entry(top(from)).or_default();
        edges.extend(targets.iter().map(top).filter(|t| *t != top(from)));
    }
    out
}

#[test]
fn the_top_level_modules_form_a_dag_too() {
    let graph = top_level(&module_graph());
    let p = |s: &str| vec![s.to_string()];
    assert!(graph[&p("pull")].contains(&p("kernels")), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        let path: Vec<String> = cycle.iter().map(show).collect();
        panic!(
            "crates/daemon's top-level modules import each other (through their children) in a circle: {}",
            path.join(" → ")
        );
    }
}

#[test]
fn the_check_finds_a_cycle() {
    let p = |s: &str| vec![s.to_string()];
    let graph: BTreeMap<ModPath, BTreeSet<ModPath>> = [
        (p("a"), [p("b")].into()),
        (p("b"), [p("c")].into()),
        (p("c"), [p("a")].into()),
    ]
    .into();
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    // Children of two modules naming each other's parent: a circle between the parents.
    let q = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
    let graph: BTreeMap<ModPath, BTreeSet<ModPath>> = [
        (q("a::x"), [q("b")].into()),
        (q("b::y"), [q("a::z")].into()),
    ]
    .into();
    assert!(find_cycle(&graph).is_none(), "no circle between files");
    assert!(
        find_cycle(&top_level(&graph)).is_some(),
        "a circle between a and b"
    );
    assert!(paths_at("{a::b, c::{d, e}}").len() == 3);
}
