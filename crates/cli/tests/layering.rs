//! The CLI is a front end: clap, the terminal, rendering, and config-file-to-options
//! mapping. The client engine (transport, stream protocols, tar packing, `vm run`'s steps)
//! is `banger-client`'s, and policy (default image, VM names, `--rm`'s deletion) is the
//! daemon's. This test fails when a CLI module reaches past that line, so the next front
//! end never has to copy code out of the CLI again.
//!
//! What it checks, and why each is the right signal:
//! - `Cargo.toml`: `banger-client` is a dependency; crates that exist only to speak the
//!   wire or the streams are not (`banger-guest-proto`: the exec/cp frames; `hyper*`,
//!   `http-body-util`: HTTP framing and upgrades; `tar`: packing trees). Without them a
//!   module cannot speak those protocols at all, whatever it is named.
//! - The sources (comments stripped): no upgraded connection opened directly (`upgrade::<`:
//!   every raw stream goes through a client function), no `vm.hold` lease (`--rm` is the
//!   daemon's, through `banger_client::run`), no name generation (`derive_vm_name`, a
//!   random suffix), and no default image chosen (`DEFAULT_IMAGE` used outside `config.rs`,
//!   which only shows the key's default in `banger config show`).

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "banger-guest-proto",
    "hyper",
    "hyper-util",
    "http-body-util",
    "h2",
    "tar",
];

/// A source pattern and why it does not belong in the CLI.
const FORBIDDEN_CODE: &[(&str, &str)] = &[
    (
        "banger_guest_proto",
        "the guest protocol is banger-client's",
    ),
    ("hyper::", "HTTP framing is banger-client's transport"),
    ("tar::", "tar packing is banger-client's transfer"),
    ("FrameBuffer", "stream framing is banger-client's"),
    ("upgrade::<", "raw streams are opened by banger-client"),
    ("methods::vm::Hold", "--rm leases are banger-client's run"),
    ("derive_vm_name", "VM names are the daemon's"),
    ("random_u16", "VM names are the daemon's"),
    (
        "methods::vm::Defaults",
        "the default image is asked for by banger-client's run",
    ),
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without `//` comments (docs may name what lives elsewhere).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names in the `[dependencies]` table (not dev-dependencies: tests may build fakes).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

fn violations_in(path: &Path, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (pattern, why) in FORBIDDEN_CODE {
        if code.contains(pattern) {
            found.push(format!("{}: uses `{pattern}`: {why}", path.display()));
        }
    }
    let is_config = path.file_name().is_some_and(|n| n == "config.rs")
        && path.parent().is_some_and(|p| p.ends_with("src"));
    if !is_config && code.contains("DEFAULT_IMAGE") {
        found.push(format!(
            "{}: uses `DEFAULT_IMAGE`: the default image is the daemon's (vm.defaults)",
            path.display()
        ));
    }
    found
}

#[test]
fn the_cli_depends_on_the_client_and_not_on_the_protocol_crates() {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).expect("Cargo.toml");
    let deps = dependencies(&manifest);
    assert!(deps.iter().any(|d| d == "banger-client"), "{deps:?}");
    let bad: Vec<&String> = deps
        .iter()
        .filter(|d| FORBIDDEN_DEPENDENCIES.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "the CLI must not depend on {bad:?}");
}

#[test]
fn no_cli_module_speaks_a_stream_protocol_or_holds_policy() {
    let mut files = Vec::new();
    sources(&crate_dir().join("src"), &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut all = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        all.extend(violations_in(file, &code_of(&text)));
    }
    assert!(all.is_empty(), "layering violations:\n{}", all.join("\n"));
}

/// The check itself catches what it is meant to (and ignores comments).
#[test]
fn the_check_finds_forbidden_uses() {
    let p = Path::new("src/commands/vm/x.rs");
    let caught = |code: &str| !violations_in(p, &code_of(code)).is_empty();
    assert!(caught("use banger_guest_proto::ExecInput;"));
    assert!(caught(
        "let c = client.upgrade::<methods::vm::Exec>(&p).await?;"
    ));
    assert!(caught("let n = derive_vm_name(None, random_u16());"));
    assert!(caught("let image = DEFAULT_IMAGE;"));
    assert!(!caught("// banger_guest_proto is the client's now"));
    assert!(!caught("banger_client::exec::session(&c, &p, i, r, o, e)"));
    assert!(violations_in(Path::new("src/config.rs"), "pub use x::DEFAULT_IMAGE;").is_empty());
    let deps = dependencies(
        "[dependencies]\ntar = \"0.4\"\n# hyper = 1\n[dev-dependencies]\nhyper = \"1\"\n",
    );
    assert_eq!(deps, ["tar"]);
}
