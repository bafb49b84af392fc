//! Fixtures: minimal ELF "modules" with a `.modinfo` section, and fake modules trees.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A 64-bit little-endian relocatable ELF with sections `.shstrtab` and `.modinfo`
/// (holding `modinfo`, `key=value` entries separated by NUL) and some filler bytes.
pub fn fake_ko(modinfo: &[&str], filler: usize) -> Vec<u8> {
    let shstrtab = b"\0.shstrtab\0.modinfo\0".to_vec();
    let mut info = Vec::new();
    for entry in modinfo {
        info.extend_from_slice(entry.as_bytes());
        info.push(0);
    }
    let strtab_off = 64u64;
    let info_off = strtab_off + shstrtab.len() as u64;
    let filler_off = info_off + info.len() as u64;
    let shoff = (filler_off + filler as u64).div_ceil(8) * 8;

    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[40..48].copy_from_slice(&shoff.to_le_bytes());
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[58..60].copy_from_slice(&64u16.to_le_bytes());
    elf[60..62].copy_from_slice(&3u16.to_le_bytes());
    elf[62..64].copy_from_slice(&1u16.to_le_bytes());
    elf.extend_from_slice(&shstrtab);
    elf.extend_from_slice(&info);
    elf.extend((0..filler).map(|i| (i % 251) as u8));
    elf.resize(shoff as usize, 0);
    let section = |name: u32, ty: u32, off: u64, size: u64| {
        let mut s = vec![0u8; 64];
        s[..4].copy_from_slice(&name.to_le_bytes());
        s[4..8].copy_from_slice(&ty.to_le_bytes());
        s[24..32].copy_from_slice(&off.to_le_bytes());
        s[32..40].copy_from_slice(&size.to_le_bytes());
        s[48..56].copy_from_slice(&1u64.to_le_bytes());
        s
    };
    elf.extend(section(0, 0, 0, 0));
    elf.extend(section(1, 3, strtab_off, shstrtab.len() as u64));
    elf.extend(section(11, 1, info_off, info.len() as u64));
    elf
}

/// A fake `lib/modules/<release>` under `root`, returned.
pub fn modules_dir(root: &Path, release: &str) -> PathBuf {
    let dir = root.join("lib/modules").join(release);
    std::fs::create_dir_all(dir.join("kernel")).expect("mkdir modules dir");
    dir
}

/// Writes module `rel` (under the modules dir) with `depends=` the given list.
pub fn add_module(dir: &Path, rel: &str, depends: &[&str]) -> Vec<u8> {
    let depends = format!("depends={}", depends.join(","));
    let ko = fake_ko(&["license=GPL", &depends, "vermagic=6.1.0-test SMP"], 300);
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &ko).expect("write module");
    ko
}

/// Compresses `path` in place with `tool` (`xz`, `zstd`, `gzip`) plus `args`, giving
/// `path.<ext>`.
pub fn compress(path: &Path, tool: &str, args: &[&str]) -> PathBuf {
    let ext = match tool {
        "xz" => "xz",
        "zstd" => "zst",
        "gzip" => "gz",
        other => panic!("unknown tool {other}"),
    };
    let status = Command::new(tool)
        .args(args)
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(status.success(), "{tool} {path:?}");
    if tool == "zstd" {
        // zstd keeps its input.
        std::fs::remove_file(path).expect("remove zstd input");
    }
    let mut out = path.as_os_str().to_owned();
    out.push(".");
    out.push(ext);
    let out = PathBuf::from(out);
    assert!(out.is_file(), "{out:?}");
    out
}
