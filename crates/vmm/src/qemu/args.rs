//! The command lines of QEMU and of the vsock helper, as pure functions of a
//! [`VmConfig`] and its [`RunFiles`] (unit-tested without starting anything).
//!
//! # Invariants
//! - Every path that lands inside a QEMU option list (`-drive file=…`, `-chardev path=…`)
//!   has its commas doubled, QEMU's escape; paths given as whole arguments (`-kernel`,
//!   `-initrd`) are passed as they are.
//! - The driver's kernel parameters come after the caller's, so they win, but before a
//!   `--` (what follows it belongs to init).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use banger_guest_proto::{GUEST_CID, SERIAL_PORT_NAME};

use crate::config::{Accel, ChannelKind, NetConfig, VmConfig};
use crate::files::RunFiles;

/// The QEMU id of the guest's memory backend, when it is not QEMU's anonymous default.
const MEM_ID: &str = "mem";

/// Guest memory when it must be more than anonymous memory:
/// - vsock: the vhost-user helper maps it, so a shared memfd;
/// - a restore from a save that kept memory in a file: that file, mapped privately
///   (copy-on-write; the save's pages are shared with every VM restored from it);
/// - [`VmConfig::shared_memory`]: a shared memfd, so that a save can copy it instead of
///   streaming it.
fn memory_backend(cfg: &VmConfig) -> Option<OsString> {
    let size = format!("id={MEM_ID},size={}M", cfg.memory_mib);
    let memfd = || Some(format!("memory-backend-memfd,{size},share=on").into());
    if cfg.channel == ChannelKind::Vsock {
        return memfd();
    }
    match &cfg.restore {
        Some(dir) => {
            let saved = dir.join(crate::qemu::MEMORY_FILE);
            if !saved.is_file() {
                return None;
            }
            let mut o = OsString::from(format!("memory-backend-file,{size},mem-path="));
            o.push(escape(saved.as_os_str()));
            o.push(",share=off");
            Some(o)
        }
        None if cfg.shared_memory => memfd(),
        None => None,
    }
}

/// The kernel parameters the driver adds, each with its reason.
fn driver_params(accel: &Accel) -> Vec<String> {
    let mut p = vec![
        // The serial console is the ISA UART, which `-serial` connects to console.log.
        "console=ttyS0".to_string(),
        // Reboot by triple fault: the fastest way out, and with -no-reboot QEMU exits.
        "reboot=t".to_string(),
        // Reboot (so QEMU exits) at once on a panic instead of hanging forever.
        "panic=-1".to_string(),
    ];
    if let Accel::Tcg { tsc_khz: Some(khz) } = accel {
        // Under emulation the TSC calibration can fail on a loaded host and hang the boot
        // before init; the host's rate is the guest's rate.
        p.push(format!("tsc_early_khz={khz}"));
    }
    p
}

/// The full kernel command line: the caller's, then the driver's parameters (before any
/// `--` that hands the rest to init).
pub(crate) fn kernel_cmdline(cfg: &VmConfig) -> String {
    let ours = driver_params(&cfg.accel).join(" ");
    let caller = cfg.cmdline.trim();
    match init_separator(caller) {
        Some(at) => {
            let (kernel, init) = caller.split_at(at);
            let kernel = kernel.trim_end();
            if kernel.is_empty() {
                format!("{ours} {init}")
            } else {
                format!("{kernel} {ours} {init}")
            }
        }
        None if caller.is_empty() => ours,
        None => format!("{caller} {ours}"),
    }
}

/// The byte offset of the first `--` word outside double quotes (the kernel's rule).
fn init_separator(cmdline: &str) -> Option<usize> {
    let bytes = cmdline.as_bytes();
    let mut in_quote = false;
    let mut word_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' {
            in_quote = !in_quote;
        }
        if !in_quote
            && word_start
            && bytes[i..].starts_with(b"--")
            && bytes.get(i + 2).is_none_or(|c| c.is_ascii_whitespace())
        {
            return Some(i);
        }
        word_start = b.is_ascii_whitespace();
    }
    None
}

/// QEMU's option-list escape: `,` → `,,`.
fn escape(s: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(s.len());
    for &b in s.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// `prefix` followed by `path` escaped.
fn opt(prefix: &str, path: &std::path::Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(escape(path.as_os_str()));
    s
}

/// QEMU's arguments (without the program).
pub(crate) fn qemu_args(cfg: &VmConfig, files: &RunFiles) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));

    let name = escape(OsStr::new(&cfg.name));
    let backend = memory_backend(cfg);
    let mut machine = String::from("microvm");
    if backend.is_some() {
        machine.push_str(&format!(",memory-backend={MEM_ID}"));
    }
    push(&["-M", &machine]);
    match cfg.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // One host thread per vCPU (QEMU's default for x86 on x86, stated here).
        Accel::Tcg { .. } => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
    }
    let mem = cfg.memory_mib.to_string();
    push(&["-smp", &cfg.cpus.to_string(), "-m", &mem]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    if let Some(backend) = backend {
        a.push("-object".into());
        a.push(backend);
    }
    a.push("-name".into());
    a.push(name);
    a.push("-kernel".into());
    a.push(cfg.kernel.clone().into_os_string());
    if let Some(initrd) = &cfg.initrd {
        a.push("-initrd".into());
        a.push(initrd.clone().into_os_string());
    }
    a.push("-append".into());
    a.push(kernel_cmdline(cfg).into());

    a.push("-chardev".into());
    // `append=on` (O_APPEND): after the daemon truncates the file to rotate it, QEMU's next
    // write lands at its start, not past a hole at QEMU's old offset.
    let mut console = opt("file,id=con,path=", &files.console_log);
    console.push(",append=on");
    a.push(console);
    a.extend(["-serial", "chardev:con"].map(OsString::from));
    a.push("-chardev".into());
    let mut qmp = opt("socket,id=qmp,path=", &files.qmp_socket);
    qmp.push(",server=on,wait=off");
    a.push(qmp);
    a.extend(["-mon", "chardev=qmp,mode=control"].map(OsString::from));

    for (i, d) in cfg.disks.iter().enumerate() {
        let mut drive = OsString::from(format!("id=d{i},file="));
        drive.push(escape(d.path.as_os_str()));
        drive.push(format!(",format={},if=none", d.format.as_str()));
        if d.read_only {
            drive.push(",readonly=on");
        } else {
            // Guest TRIM punches holes in the sparse file: freed space returns to the host.
            drive.push(",discard=unmap");
        }
        a.push("-drive".into());
        a.push(drive);
        a.push("-device".into());
        a.push(format!("virtio-blk-device,drive=d{i}").into());
    }

    match cfg.channel {
        ChannelKind::Vsock => {
            a.push("-chardev".into());
            a.push(opt("socket,id=vs,path=", &files.vhost_socket));
            a.extend(["-device", "vhost-user-vsock-device,chardev=vs"].map(OsString::from));
        }
        ChannelKind::Serial => {
            a.extend(["-device", "virtio-serial-device", "-chardev"].map(OsString::from));
            let mut chr = opt("socket,id=agent,path=", &files.serial_socket);
            chr.push(",server=on,wait=off");
            a.push(chr);
            a.push("-device".into());
            a.push(format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}").into());
        }
    }

    if cfg.restore.is_some() {
        // The driver sets the migration capabilities over QMP, then starts the incoming
        // migration on the migration socket (`state::start_incoming`); QEMU runs once it
        // has read the whole state.
        a.extend(["-incoming", "defer"].map(OsString::from));
    }

    if let NetConfig::User { .. } = &cfg.net {
        // The TAP of the VM's network namespace (`crate::netns`), where QEMU runs; the
        // guest starts paused (`-S`) and the driver resumes it once pasta is attached, so
        // no early frame is lost.
        let netdev = format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            crate::netns::TAP_NAME
        );
        a.extend(
            [
                "-S",
                "-netdev",
                &netdev,
                "-device",
                "virtio-net-device,netdev=n0",
            ]
            .map(OsString::from),
        );
    }
    a
}

/// `vhost-device-vsock`'s arguments (without the program).
pub(crate) fn vsock_helper_args(files: &RunFiles) -> Vec<OsString> {
    vec![
        "--guest-cid".into(),
        GUEST_CID.to_string().into(),
        "--socket".into(),
        files.vhost_socket.clone().into_os_string(),
        "--uds-path".into(),
        files.vsock_uds.clone().into_os_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiskConfig, PortForward, Proto};
    use std::path::{Path, PathBuf};

    fn cfg() -> VmConfig {
        VmConfig {
            name: "dev".into(),
            run_dir: PathBuf::from("/run/b,anger/vm"),
            cpus: 2,
            memory_mib: 512,
            kernel: PathBuf::from("/k/vm,linuz"),
            initrd: Some(PathBuf::from("/k/initrd.img")),
            cmdline: "root=/dev/vda quiet".into(),
            disks: vec![],
            channel: ChannelKind::Serial,
            net: NetConfig::None,
            accel: Accel::Kvm,
            restore: None,
            shared_memory: false,
        }
    }

    fn render(cfg: &VmConfig) -> Vec<String> {
        qemu_args(cfg, &RunFiles::new(&cfg.run_dir))
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    /// The value following `flag`, for each occurrence.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn kvm_serial_without_network() {
        let a = render(&cfg());
        assert_eq!(values(&a, "-M"), ["microvm"]);
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert_eq!(values(&a, "-m"), ["512"]);
        // Whole-argument paths are not escaped.
        assert_eq!(values(&a, "-kernel"), ["/k/vm,linuz"]);
        assert_eq!(values(&a, "-initrd"), ["/k/initrd.img"]);
        assert_eq!(
            values(&a, "-append"),
            ["root=/dev/vda quiet console=ttyS0 reboot=t panic=-1"]
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag}");
        }
        assert_eq!(
            values(&a, "-chardev"),
            [
                "file,id=con,path=/run/b,,anger/vm/console.log,append=on",
                "socket,id=qmp,path=/run/b,,anger/vm/qmp.sock,server=on,wait=off",
                "socket,id=agent,path=/run/b,,anger/vm/agent.sock,server=on,wait=off",
            ]
        );
        assert_eq!(
            values(&a, "-device"),
            [
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=org.banger.agent.0"
            ]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:con"]);
        assert!(values(&a, "-netdev").is_empty());
        assert!(values(&a, "-object").is_empty());
    }

    #[test]
    fn disks_in_order_with_readonly_and_discard() {
        let c = VmConfig {
            disks: vec![
                DiskConfig {
                    path: PathBuf::from("/img/root,fs.ext4"),
                    read_only: true,
                    format: Default::default(),
                },
                DiskConfig {
                    path: PathBuf::from("/vm/upper.ext4"),
                    read_only: false,
                    format: Default::default(),
                },
                DiskConfig {
                    path: PathBuf::from("/vm/work.ext4"),
                    read_only: false,
                    format: Default::default(),
                },
            ],
            ..cfg()
        };
        let a = render(&c);
        assert_eq!(
            values(&a, "-drive"),
            [
                "id=d0,file=/img/root,,fs.ext4,format=raw,if=none,readonly=on",
                "id=d1,file=/vm/upper.ext4,format=raw,if=none,discard=unmap",
                "id=d2,file=/vm/work.ext4,format=raw,if=none,discard=unmap",
            ]
        );
        let blk: Vec<_> = values(&a, "-device")
            .into_iter()
            .filter(|d| d.starts_with("virtio-blk"))
            .collect();
        assert_eq!(
            blk,
            [
                "virtio-blk-device,drive=d0",
                "virtio-blk-device,drive=d1",
                "virtio-blk-device,drive=d2"
            ]
        );
    }

    #[test]
    fn shared_memory_is_a_memfd_when_booting_and_a_private_file_when_restored() {
        let mut c = cfg();
        c.shared_memory = true;
        let a = render(&c);
        assert_eq!(values(&a, "-M"), ["microvm,memory-backend=mem"]);
        assert_eq!(
            values(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=512M,share=on"]
        );
        assert!(values(&a, "-incoming").is_empty());

        // Restored from a save that kept the memory file: that file, copy-on-write.
        let saved = tempfile::tempdir().expect("tempdir");
        std::fs::write(saved.path().join(crate::qemu::MEMORY_FILE), b"").expect("memory");
        c.restore = Some(saved.path().to_path_buf());
        let a = render(&c);
        let want = format!(
            "memory-backend-file,id=mem,size=512M,mem-path={}/memory,share=off",
            saved.path().display()
        );
        assert_eq!(values(&a, "-object"), [want.as_str()]);
        assert_eq!(values(&a, "-incoming"), ["defer"]);

        // A save that streamed its memory: QEMU's own memory, filled from the stream.
        std::fs::remove_file(saved.path().join(crate::qemu::MEMORY_FILE)).expect("rm");
        let a = render(&c);
        assert_eq!(values(&a, "-M"), ["microvm"]);
        assert!(values(&a, "-object").is_empty());
    }

    #[test]
    fn vsock_shares_memory_with_the_helper() {
        let c = VmConfig {
            channel: ChannelKind::Vsock,
            accel: Accel::Tcg {
                tsc_khz: Some(2_596_122),
            },
            ..cfg()
        };
        let a = render(&c);
        assert_eq!(values(&a, "-M"), ["microvm,memory-backend=mem"]);
        assert_eq!(values(&a, "-accel"), ["tcg,thread=multi"]);
        assert_eq!(values(&a, "-cpu"), ["max"]);
        assert_eq!(
            values(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=512M,share=on"]
        );
        assert!(
            values(&a, "-chardev").contains(&"socket,id=vs,path=/run/b,,anger/vm/vhost-vsock.sock")
        );
        assert_eq!(
            values(&a, "-device"),
            ["vhost-user-vsock-device,chardev=vs"]
        );
        assert!(!a.iter().any(|x| x.contains("agent.sock")));

        let h: Vec<String> = vsock_helper_args(&RunFiles::new(Path::new("/r")))
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            h,
            [
                "--guest-cid",
                "3",
                "--socket",
                "/r/vhost-vsock.sock",
                "--uds-path",
                "/r/vsock.sock"
            ]
        );
    }

    #[test]
    fn user_network_with_forwards() {
        let c = VmConfig {
            net: NetConfig::User {
                forwards: vec![
                    PortForward {
                        proto: Proto::Tcp,
                        host_ip: "127.0.0.1".parse().unwrap(),
                        host_port: 8080,
                        guest_port: 80,
                    },
                    PortForward {
                        proto: Proto::Udp,
                        host_ip: "0.0.0.0".parse().unwrap(),
                        host_port: 5353,
                        guest_port: 53,
                    },
                ],
                policy: Default::default(),
            },
            ..cfg()
        };
        let a = render(&c);
        // Forwards are pasta's business, not QEMU's.
        assert_eq!(
            values(&a, "-netdev"),
            ["tap,id=n0,ifname=tap0,script=no,downscript=no"]
        );
        assert!(values(&a, "-device").contains(&"virtio-net-device,netdev=n0"));
        assert!(a.iter().any(|x| x == "-S"), "starts paused: {a:?}");
        let none = render(&VmConfig {
            net: NetConfig::None,
            ..cfg()
        });
        assert!(!none.iter().any(|x| x == "-S"));
    }

    #[test]
    fn tsc_early_khz_only_under_tcg() {
        let with = |accel, cmdline: &str| {
            kernel_cmdline(&VmConfig {
                accel,
                cmdline: cmdline.into(),
                ..cfg()
            })
        };
        let tcg = Accel::Tcg {
            tsc_khz: Some(2_596_122),
        };
        assert_eq!(
            with(tcg, ""),
            "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2596122"
        );
        assert_eq!(with(Accel::Kvm, ""), "console=ttyS0 reboot=t panic=-1");
        assert_eq!(
            with(Accel::Tcg { tsc_khz: None }, "quiet"),
            "quiet console=ttyS0 reboot=t panic=-1"
        );
        // Before init's arguments, not after.
        assert_eq!(
            with(Accel::Kvm, "quiet -- --single"),
            "quiet console=ttyS0 reboot=t panic=-1 -- --single"
        );
        assert_eq!(
            with(Accel::Kvm, "-- x"),
            "console=ttyS0 reboot=t panic=-1 -- x"
        );
        // A quoted `--` is a value, and `--x` is not the separator.
        assert_eq!(
            with(Accel::Kvm, "a=\"b -- c\" --x"),
            "a=\"b -- c\" --x console=ttyS0 reboot=t panic=-1"
        );
    }

    #[test]
    fn names_are_escaped() {
        let a = render(&VmConfig {
            name: "a,b".into(),
            ..cfg()
        });
        assert_eq!(values(&a, "-name"), ["a,,b"]);
    }
}
