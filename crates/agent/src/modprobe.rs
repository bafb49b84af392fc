//! The agent as the guest's `modprobe`: run by the kernel (`/proc/sys/kernel/modprobe`,
//! as `modprobe -q -- <name or alias>`) and by programs that load modules themselves
//! (`modprobe overlay`, `modprobe -va bridge br_netfilter`), it loads a module and its
//! dependencies from banger's modules disk (see `banger_guest_proto::modindex`).
//!
//! kmod's options that matter are understood: `-q`, `-v`, `-a`, `-n`, `--`, and module
//! parameters after the name; `-b`, `-s`, `--first-time` are accepted and ignored;
//! removal (`-r`) is refused. Exit status as kmod's: 0 loaded (or built in, or loaded
//! already), 1 otherwise.

use std::ffi::{CString, OsString};
use std::io;
use std::path::Path;

use banger_guest_proto::modindex::{self, ModIndex};

use crate::sys;

/// Whether this process was started as `modprobe` (or as the disk's `banger-modprobe`).
pub fn invoked_as(argv0: Option<&OsString>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "modprobe" || n == modindex::MODPROBE_FILE)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    quiet: bool,
    verbose: bool,
    all: bool,
    dry_run: bool,
    remove: bool,
    words: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut options_done = false;
    for a in args {
        if options_done || !a.starts_with('-') || a == "-" {
            o.words.push(a.clone());
            continue;
        }
        match a.as_str() {
            "--" => options_done = true,
            "--quiet" => o.quiet = true,
            "--verbose" => o.verbose = true,
            "--all" => o.all = true,
            "--dry-run" | "--show" => o.dry_run = true,
            "--remove" => o.remove = true,
            "--use-blacklist" | "--syslog" | "--first-time" | "--ignore-install" => {}
            long if long.starts_with("--") => return Err(format!("unsupported option {long}")),
            short => {
                for c in short.chars().skip(1) {
                    match c {
                        'q' => o.quiet = true,
                        'v' => o.verbose = true,
                        'a' => o.all = true,
                        'n' => o.dry_run = true,
                        'r' => o.remove = true,
                        'b' | 's' | 'i' => {}
                        other => return Err(format!("unsupported option -{other}")),
                    }
                }
            }
        }
    }
    Ok(o)
}

/// Runs `modprobe` with `args` (without `argv[0]`); returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("modprobe (banger): {e}");
            return 1;
        }
    };
    if o.remove {
        eprintln!("modprobe (banger): removing modules is not supported");
        return 1;
    }
    let Some((first, rest)) = o.words.split_first() else {
        eprintln!("modprobe (banger): no module name given");
        return 1;
    };
    let dir = Path::new("/lib/modules").join(sys::kernel_release());
    let index = match std::fs::read_to_string(dir.join(modindex::INDEX_FILE))
        .ok()
        .and_then(|t| ModIndex::parse(&t))
    {
        Some(i) => i,
        None => {
            if !o.quiet {
                eprintln!(
                    "modprobe (banger): no module index at {}",
                    dir.join(modindex::INDEX_FILE).display()
                );
            }
            return 1;
        }
    };
    let (names, params): (Vec<&String>, String) = if o.all {
        (o.words.iter().collect(), String::new())
    } else {
        (vec![first], rest.join(" "))
    };
    let mut status = 0;
    for name in names {
        if let Err(e) = probe(&index, &dir, name, &params, &o) {
            if !o.quiet {
                eprintln!("modprobe (banger): {e}");
            }
            status = 1;
        }
    }
    status
}

/// Loads what `name` (a module or an alias) resolves to.
fn probe(
    index: &ModIndex,
    dir: &Path,
    name: &str,
    params: &str,
    o: &Options,
) -> Result<(), String> {
    let modules = index.lookup(name);
    if modules.is_empty() {
        return Err(format!(
            "module {name} not found in directory {}",
            dir.display()
        ));
    }
    for module in &modules {
        let order = index.load_order(module).map_err(|e| e.to_string())?;
        let last = order.len().saturating_sub(1);
        for (i, entry) in order.iter().enumerate() {
            let path = dir.join(&entry.path);
            if o.verbose {
                println!("insmod {}", path.display());
            }
            if o.dry_run {
                continue;
            }
            // Parameters go to the module asked for, not to its dependencies.
            let p = if i == last { params } else { "" };
            let p = CString::new(p).map_err(|_| "a parameter has a NUL byte".to_string())?;
            match sys::finit_module(&path, &p) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(describe(&path, &e)),
            }
        }
    }
    Ok(())
}

fn describe(path: &Path, e: &io::Error) -> String {
    format!("could not insert {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn kmod_command_lines() {
        let o = parse(&args("-q -- fs-overlay")).expect("kernel's");
        assert!(o.quiet && !o.all && o.words == ["fs-overlay"]);
        let o = parse(&args("-va bridge br_netfilter")).expect("docker's");
        assert!(o.verbose && o.all && o.words == ["bridge", "br_netfilter"]);
        let o = parse(&args("loop max_loop=8")).expect("with a parameter");
        assert_eq!(o.words, ["loop", "max_loop=8"]);
        let o = parse(&args("-- -weird")).expect("after --");
        assert_eq!(o.words, ["-weird"]);
        assert!(parse(&args("-r overlay")).expect("remove").remove);
        assert!(parse(&args("-x overlay")).is_err());
        assert!(parse(&args("--config=/x overlay")).is_err());
        assert!(invoked_as(Some(&"/usr/sbin/modprobe".into())));
        assert!(invoked_as(Some(&"/lib/modules/6.1/banger-modprobe".into())));
        assert!(!invoked_as(Some(&"/init".into())));
        assert!(!invoked_as(None));
    }
}
