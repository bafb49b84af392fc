//! Kernel module dependency resolution against a modules tree laid out as
//! `lib/modules/<release>` is: `modules.dep` (written by `depmod`) when present, else
//! every module's own `.modinfo` `depends=` (an extracted, not installed, package has no
//! `modules.dep`); `modules.builtin` names the modules compiled into the kernel, which
//! need no file. In module names `-` and `_` are the same (`virtio-rng` is `virtio_rng`).
//!
//! Module files may be `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`; they are decompressed in
//! process (see [`crate::decompress`]) because the guest loads them with a bare
//! `init_module`, which takes an uncompressed ELF object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::decompress::{self, Compression};
use crate::error::KernelError;

/// Largest module accepted after decompression (the biggest real ones are tens of MiB).
const MAX_MODULE: u64 = 512 << 20;

/// Module file endings, with the compression each one implies.
const EXTENSIONS: [(&str, Compression); 4] = [
    (".ko", Compression::None),
    (".ko.xz", Compression::Xz),
    (".ko.zst", Compression::Zstd),
    (".ko.gz", Compression::Gzip),
];

/// Where module files live under the modules dir when there is no `modules.dep`, in
/// increasing priority (depmod's default `search updates built-in`: `updates/` wins).
const SEARCH_DIRS: [&str; 3] = ["kernel", "extra", "updates"];

/// One module ready to load: its name, where it came from, its uncompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalized name (`_`, never `-`): `virtio_blk`.
    pub name: String,
    /// The module file (possibly compressed) inside the modules dir.
    pub path: PathBuf,
    /// The uncompressed ELF object.
    pub bytes: Vec<u8>,
}

/// The modules tree of one kernel: module name → file, dependencies, built-ins.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// Name → path relative to `dir`.
    paths: BTreeMap<String, PathBuf>,
    /// Name → direct dependencies, from `modules.dep`; `None` without one (then each
    /// module's `.modinfo` says).
    deps: Option<BTreeMap<String, Vec<String>>>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Reads the index of the modules dir `dir` (`…/lib/modules/<release>`).
    pub fn load(dir: &Path) -> Result<ModuleIndex, KernelError> {
        let builtin = read_optional(&dir.join("modules.builtin"))?
            .unwrap_or_default()
            .lines()
            .filter_map(module_name)
            .collect();
        let mut paths = BTreeMap::new();
        let deps = match read_optional(&dir.join("modules.dep"))? {
            Some(dep_file) => {
                let mut deps = BTreeMap::new();
                for line in dep_file.lines() {
                    let Some((m, ds)) = line.split_once(':') else {
                        continue;
                    };
                    let Some(name) = module_name(m) else { continue };
                    paths.insert(name.clone(), PathBuf::from(m.trim()));
                    deps.insert(
                        name,
                        ds.split_whitespace().filter_map(module_name).collect(),
                    );
                }
                Some(deps)
            }
            None => {
                for sub in SEARCH_DIRS {
                    walk_modules(dir, Path::new(sub), &mut paths)?;
                }
                None
            }
        };
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            paths,
            deps,
            builtin,
        })
    }

    /// The modules dir this index was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` is compiled into the kernel (listed in `modules.builtin`).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// The file of module `name`, when the tree has one.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.paths
            .get(&normalize_name(name))
            .map(|rel| self.dir.join(rel))
    }

    /// Every module file: normalized name and path relative to [`Self::dir`], by name.
    pub fn modules(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.paths.iter().map(|(n, p)| (n.as_str(), p.as_path()))
    }

    /// The modules compiled into the kernel.
    pub fn builtin(&self) -> impl Iterator<Item = &String> {
        self.builtin.iter()
    }

    /// Number of module files the tree holds.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the tree holds no module files.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The modules `wanted` and everything they depend on, in load order (each module
    /// after its dependencies; otherwise in the order asked), built-ins left out, each
    /// read and decompressed once. A module that is neither built in nor shipped is a
    /// [`KernelError::MissingModule`].
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<Module>, KernelError> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        for name in wanted {
            self.visit(&normalize_name(name), None, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: Option<&str>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), KernelError> {
        if self.builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(rel) = self.paths.get(name) else {
            return Err(KernelError::MissingModule {
                release: self.release(),
                module: name.to_string(),
                needed_by: needed_by.map(str::to_string),
                modules_dir: self.dir.clone(),
            });
        };
        let path = self.dir.join(rel);
        let bytes = read_module(&path)?;
        let deps = match self.deps.as_ref().and_then(|d| d.get(name)) {
            Some(d) => d.clone(),
            None => modinfo_depends(&bytes).map_err(|reason| KernelError::NotAModule {
                path: path.clone(),
                reason,
            })?,
        };
        for dep in deps {
            self.visit(&normalize_name(&dep), Some(name), seen, order)?;
        }
        order.push(Module {
            name: name.to_string(),
            path,
            bytes,
        });
        Ok(())
    }

    /// The kernel release: the dir's name in a `lib/modules/<release>` layout, else the
    /// `vermagic` of the first module that has one.
    pub fn release(&self) -> Option<String> {
        let in_modules = self
            .dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|p| p == "modules");
        if in_modules && let Some(name) = self.dir.file_name().and_then(|n| n.to_str()) {
            return Some(name.to_string());
        }
        self.paths.values().take(8).find_map(|rel| {
            let bytes = read_module(&self.dir.join(rel)).ok()?;
            let info = modinfo(&bytes).ok()?;
            let vermagic = info.iter().find(|(k, _)| k == "vermagic")?;
            vermagic.1.split_whitespace().next().map(str::to_string)
        })
    }
}

/// Resolves `wanted` against the modules tree at `modules_dir` (see
/// [`ModuleIndex::resolve`]). No tree at all (`None`, or a path that does not exist) means
/// a kernel with everything built in, as custom kernels often are: the answer is empty.
pub fn resolve_modules(
    modules_dir: Option<&Path>,
    wanted: &[&str],
) -> Result<Vec<Module>, KernelError> {
    let Some(dir) = modules_dir else {
        return Ok(Vec::new());
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => ModuleIndex::load(dir)?.resolve(wanted),
        Ok(_) => Err(KernelError::io(
            "reading modules dir",
            dir,
            std::io::Error::other("not a directory; pass the kernel's lib/modules/<release>"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(KernelError::io("reading modules dir", dir, e)),
    }
}

/// The file's text, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, KernelError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KernelError::io("reading", path, e)),
    }
}

/// Adds every module file under `root/rel` (sorted, so duplicates resolve the same way
/// every time; symlinked directories are not followed).
fn walk_modules(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<String, PathBuf>,
) -> Result<(), KernelError> {
    let dir = root.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(KernelError::io("listing modules dir", dir, e)),
    };
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e| KernelError::io("listing modules dir", &dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let is_dir = e
            .file_type()
            .map_err(|err| KernelError::io("reading", root.join(&rel), err))?
            .is_dir();
        if is_dir {
            walk_modules(root, &rel, out)?;
        } else if let Some(name) = rel.to_str().and_then(module_name) {
            out.insert(name, rel);
        }
    }
    Ok(())
}

/// The module name of a module file path: `kernel/drivers/block/virtio-blk.ko.xz` →
/// `virtio_blk`; `None` for anything that is not a module file.
pub fn module_name(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let stem = EXTENSIONS
        .iter()
        .find_map(|(ext, _)| file.strip_suffix(ext))?;
    (!stem.is_empty()).then(|| normalize_name(stem))
}

/// `-` and `_` are equivalent in module names; this spells them `_`.
pub fn normalize_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// A module file's bytes as the kernel loads them: decompressed according to its ending
/// (`.ko.xz`, `.ko.zst`, `.ko.gz`; plain `.ko` as is), and checked to be an ELF object.
pub fn read_module(path: &Path) -> Result<Vec<u8>, KernelError> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some((ext, compression)) = EXTENSIONS.iter().rev().find(|(ext, _)| file.ends_with(ext))
    else {
        return Err(KernelError::NotAModule {
            path: path.to_path_buf(),
            reason: "the name does not end in .ko, .ko.xz, .ko.zst or .ko.gz".into(),
        });
    };
    let raw = std::fs::read(path).map_err(|e| KernelError::io("reading module", path, e))?;
    let bytes = if *compression == Compression::None {
        raw
    } else {
        let found = Compression::sniff(&raw);
        if found != *compression {
            return Err(KernelError::NotAModule {
                path: path.to_path_buf(),
                reason: format!(
                    "named {ext} but holds {} data, not {}",
                    found.name(),
                    compression.name()
                ),
            });
        }
        decompress::decode_all(&raw, MAX_MODULE).map_err(|source| KernelError::Decompress {
            path: path.to_path_buf(),
            source,
        })?
    };
    if !bytes.starts_with(b"\x7fELF") {
        return Err(KernelError::NotAModule {
            path: path.to_path_buf(),
            reason: "no ELF header".into(),
        });
    }
    Ok(bytes)
}

/// The `key=value` entries of a module's `.modinfo` section, in order.
pub fn modinfo(ko: &[u8]) -> Result<Vec<(String, String)>, String> {
    let section = elf_section(ko, b".modinfo")?.unwrap_or_default();
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// The `depends=a,b` entry of a module's `.modinfo` (normalized names; empty when the
/// module depends on nothing or has no `.modinfo`).
pub fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>, String> {
    Ok(modinfo(ko)?
        .into_iter()
        .find(|(k, _)| k == "depends")
        .map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(normalize_name)
                .collect()
        })
        .unwrap_or_default())
}

/// The contents of the ELF section called `name` (32- or 64-bit, either byte order);
/// `Ok(None)` when there is none, `Err` when the ELF structure is damaged.
fn elf_section<'a>(elf: &'a [u8], name: &[u8]) -> Result<Option<&'a [u8]>, String> {
    if !elf.starts_with(b"\x7fELF") {
        return Err("no ELF header".into());
    }
    let is64 = match elf.get(4) {
        Some(1) => false,
        Some(2) => true,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    let le = match elf.get(5) {
        Some(1) => true,
        Some(2) => false,
        other => return Err(format!("unknown ELF byte order {other:?}")),
    };
    let damaged = |what: &str| format!("damaged ELF: {what} is out of bounds");
    let uint = |at: usize, len: usize| -> Result<u64, String> {
        let b = elf
            .get(at..at + len)
            .ok_or_else(|| damaged("a header field"))?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if le { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    };
    let word = if is64 { 8 } else { 4 };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (
            uint(0x28, 8)?,
            uint(0x3a, 2)?,
            uint(0x3c, 2)?,
            uint(0x3e, 2)?,
        )
    } else {
        (
            uint(0x20, 4)?,
            uint(0x2e, 2)?,
            uint(0x30, 2)?,
            uint(0x32, 2)?,
        )
    };
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| damaged("an offset"));
    let (shoff, shentsize, shnum) = (to_usize(shoff)?, to_usize(shentsize)?, to_usize(shnum)?);
    if shnum == 0 {
        return Ok(None);
    }
    // Section header fields: name (u32), type (u32), flags (word), addr (word),
    // offset (word), size (word).
    let section = |i: usize| -> Result<(u64, &'a [u8]), String> {
        let at = shoff
            .checked_add(
                i.checked_mul(shentsize)
                    .ok_or_else(|| damaged("a section"))?,
            )
            .ok_or_else(|| damaged("a section"))?;
        let name_off = uint(at, 4)?;
        let sh_type = uint(at + 4, 4)?;
        let offset = to_usize(uint(at + 8 + 2 * word, word)?)?;
        let size = to_usize(uint(at + 8 + 3 * word, word)?)?;
        // SHT_NOBITS (8) occupies no file bytes.
        let data = if sh_type == 8 {
            &[][..]
        } else {
            offset
                .checked_add(size)
                .and_then(|end| elf.get(offset..end))
                .ok_or_else(|| damaged("section data"))?
        };
        Ok((name_off, data))
    };
    let (_, strtab) = section(to_usize(shstrndx)?)?;
    for i in 0..shnum {
        let (name_off, data) = section(i)?;
        let Some(rest) = strtab.get(to_usize(name_off)?..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] == name {
            return Ok(Some(data));
        }
    }
    Ok(None)
}
