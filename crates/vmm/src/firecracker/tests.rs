//! The driver's configuration against Firecracker v1.16.1's published API schema, and
//! the checks that refuse what Firecracker cannot run.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::api::{self, Request};
use super::*;
use crate::config::{DiskConfig, PortForward, Proto};

/// `../shared/tools` beside the repository (where CI has it too).
fn tools_dir() -> PathBuf {
    banger_testkit::tools::shared_tools_dir()
}

/// The schema as JSON, or `None` (skipped, loudly) outside CI when it is missing.
fn schema() -> Option<Value> {
    let path = tools_dir().join("firecracker-v1.16.1-api.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but Firecracker's API schema {} is missing: {e}",
                path.display()
            )
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: Firecracker's API schema {} is not readable ({e}); these checks \
                 run where ../shared/tools is present (and fail in CI without it)",
                path.display()
            );
            return None;
        }
    };
    Some(serde_yaml::from_str(&text).expect("the schema parses as YAML"))
}

/// Checks `v` against `schema` (a swagger 2.0 schema object), resolving `$ref`s in
/// `root`: types, `required`, `enum`, `minimum`/`maximum`, and no properties beyond
/// `properties`. Returns every violation, with its JSON path.
fn violations(root: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/definitions/");
        let def = &root["definitions"][name];
        assert!(!def.is_null(), "unresolved $ref {r}");
        return violations(root, def, v, at, out);
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.push(format!("{at}: {v} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some(other) => panic!("schema type {other} not handled"),
        None => true,
    };
    if !ok {
        out.push(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("{at}: {n} < minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("{at}: {n} > maximum {max}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                out.push(format!("{at}: required property {name} is missing"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => violations(root, s, val, &format!("{at}.{k}"), out),
                None => out.push(format!("{at}: unknown property {k}")),
            }
        }
    }
}

/// The schema of `PUT <path>`'s body, by the path template (`/drives/{drive_id}`), and
/// that the endpoint takes PUT at all.
fn body_schema<'a>(root: &'a Value, r: &Request) -> &'a Value {
    let paths = root["paths"].as_object().expect("paths");
    let (template, item) = paths
        .iter()
        .find(|(t, _)| {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (t.split('/').collect(), r.path.split('/').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
        })
        .unwrap_or_else(|| panic!("{} is not an API path", r.path));
    let op = &item[r.method.to_ascii_lowercase()];
    assert!(
        op.is_object(),
        "{} {template} is not an operation",
        r.method
    );
    let body = op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["in"] == "body"))
        .unwrap_or_else(|| panic!("{} {template} takes no body", r.method));
    &body["schema"]
}

fn full_config(dir: &Path) -> VmConfig {
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF\x02\x01\x01").unwrap();
    let disk = |n: &str| {
        let p = dir.join(n);
        std::fs::write(&p, b"").unwrap();
        p
    };
    VmConfig {
        name: "web 1".into(),
        run_dir: dir.to_path_buf(),
        cpus: 2,
        memory_mib: 512,
        kernel,
        initrd: Some(disk("initrd")),
        cmdline: "quiet banger.channel=vsock".into(),
        disks: vec![
            DiskConfig {
                path: disk("base.ext4"),
                read_only: true,
                format: Default::default(),
            },
            DiskConfig {
                path: disk("upper.ext4"),
                read_only: false,
                format: Default::default(),
            },
            DiskConfig {
                path: disk("work.ext4"),
                read_only: false,
                format: Default::default(),
            },
        ],
        channel: ChannelKind::Vsock,
        net: NetConfig::User {
            forwards: vec![PortForward {
                proto: Proto::Tcp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: 8080,
                guest_port: 80,
            }],
            policy: Default::default(),
        },
        accel: Accel::Kvm,
        restore: None,
        shared_memory: false,
    }
}

fn all_requests(cfg: &VmConfig) -> Vec<Request> {
    let files = RunFiles::new(&cfg.run_dir);
    let mut v = api::requests(
        cfg,
        &api::GuestPaths::direct(cfg, &files),
        Some(crate::netns::TAP_NAME),
    );
    v.push(api::instance_start());
    v.push(api::ctrl_alt_del());
    v.push(api::set_state(api::VmState::Paused));
    v.push(api::set_state(api::VmState::Resumed));
    v.push(api::snapshot_create(
        &cfg.run_dir.join("snap/vmstate"),
        &cfg.run_dir.join("snap/memory"),
    ));
    let restored = VmConfig {
        restore: Some(cfg.run_dir.join("snap")),
        ..cfg.clone()
    };
    v.extend(api::restore_requests(
        &restored,
        &api::GuestPaths::direct(&restored, &files),
        Some(crate::netns::TAP_NAME),
    ));
    v
}

#[test]
fn every_request_body_matches_the_published_schema() {
    let Some(root) = schema() else { return };
    assert_eq!(root["info"]["version"], "1.16.1");
    let dir = tempfile::tempdir().unwrap();
    let cfg = full_config(dir.path());
    let reqs = all_requests(&cfg);
    let kinds: std::collections::BTreeSet<&str> = reqs.iter().map(|r| r.schema).collect();
    for want in [
        "MachineConfiguration",
        "BootSource",
        "SerialDevice",
        "Drive",
        "Vsock",
        "NetworkInterface",
        "InstanceActionInfo",
        "Vm",
        "SnapshotCreateParams",
        "SnapshotLoadParams",
    ] {
        assert!(kinds.contains(want), "no {want} request in {kinds:?}");
    }
    for r in &reqs {
        let s = body_schema(&root, r);
        assert_eq!(
            s["$ref"],
            format!("#/definitions/{}", r.schema),
            "{} {} is documented with another body type",
            r.method,
            r.path
        );
        let mut errs = Vec::new();
        violations(&root, s, &r.body, r.schema, &mut errs);
        assert!(
            errs.is_empty(),
            "{} {}: {errs:#?}\nbody: {}",
            r.method,
            r.path,
            r.body
        );
    }
}

#[test]
fn the_schema_check_catches_what_firecracker_refuses() {
    let Some(root) = schema() else { return };
    let check = |def: &str, v: Value| {
        let mut errs = Vec::new();
        violations(&root, &root["definitions"][def], &v, def, &mut errs);
        errs
    };
    assert!(
        check(
            "MachineConfiguration",
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 1})
        )
        .is_empty()
    );
    let e = check(
        "MachineConfiguration",
        serde_json::json!({"vcpu_count": 2, "mem": 1}),
    );
    assert!(
        e.iter().any(|e| e.contains("mem_size_mib is missing")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|e| e.contains("unknown property mem")),
        "{e:?}"
    );
    let e = check(
        "MachineConfiguration",
        serde_json::json!({"vcpu_count": 33, "mem_size_mib": "1"}),
    );
    assert_eq!(e.len(), 2, "{e:?}");
    let e = check(
        "InstanceActionInfo",
        serde_json::json!({"action_type": "Reboot"}),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    let e = check(
        "Drive",
        serde_json::json!({"drive_id": "vda", "is_root_device": "no"}),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    let e = check("Vm", serde_json::json!({"state": "Stopped"}));
    assert_eq!(e.len(), 1, "{e:?}");
    let e = check(
        "SnapshotLoadParams",
        serde_json::json!({"mem_backend": {"backend_type": "Mmap", "backend_path": "/m"},
                           "vsock_override": {}, "resume": true}),
    );
    assert!(
        e.iter().any(|e| e.contains("snapshot_path is missing")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|e| e.contains("\"Mmap\" is not one of")),
        "{e:?}"
    );
    assert!(e.iter().any(|e| e.contains("uds_path is missing")), "{e:?}");
    assert!(
        e.iter().any(|e| e.contains("unknown property resume")),
        "{e:?}"
    );
}

#[test]
fn the_pause_resume_and_snapshot_bodies_are_what_the_api_wants() {
    assert_eq!(
        api::set_state(api::VmState::Paused),
        Request {
            method: "PATCH",
            path: "/vm".into(),
            body: serde_json::json!({"state": "Paused"}),
            schema: "Vm",
        }
    );
    assert_eq!(
        api::set_state(api::VmState::Resumed).body,
        serde_json::json!({"state": "Resumed"})
    );
    let r = api::snapshot_create(Path::new("/s/vmstate"), Path::new("/s/memory"));
    assert_eq!((r.method, r.path.as_str()), ("PUT", "/snapshot/create"));
    assert_eq!(
        r.body,
        serde_json::json!({"mem_file_path": "/s/memory", "snapshot_path": "/s/vmstate",
                           "snapshot_type": "Full"})
    );
}

#[test]
fn a_restore_sets_the_console_then_loads_with_this_vms_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let cfg = VmConfig {
        restore: Some(snap.clone()),
        ..full_config(dir.path())
    };
    let files = RunFiles::new(dir.path());
    let reqs = api::restore_requests(
        &cfg,
        &api::GuestPaths::direct(&cfg, &files),
        Some(crate::netns::TAP_NAME),
    );
    let run = dir.path().display();
    let calls: Vec<(&str, &str)> = reqs.iter().map(|r| (r.method, r.path.as_str())).collect();
    assert_eq!(calls, [("PUT", "/serial"), ("PUT", "/snapshot/load")]);
    assert_eq!(
        reqs[0].body,
        serde_json::json!({"serial_out_path": format!("{run}/console.log")})
    );
    assert_eq!(
        reqs[1].body,
        serde_json::json!({
            "mem_backend": {"backend_type": "File", "backend_path": format!("{run}/snap/memory")},
            "snapshot_path": format!("{run}/snap/vmstate"),
            "resume_vm": true,
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "vsock_override": {"uds_path": format!("{run}/vsock.sock")},
        })
    );
    // Without a network there is no override; jailed, every path is the jail's.
    let bare = VmConfig {
        net: NetConfig::None,
        ..cfg.clone()
    };
    let reqs = api::restore_requests(&bare, &jail::Jail::guest_paths(&bare), None);
    assert_eq!(
        reqs[1].body,
        serde_json::json!({
            "mem_backend": {"backend_type": "File", "backend_path": "/memory"},
            "snapshot_path": "/vmstate",
            "resume_vm": true,
            "vsock_override": {"uds_path": "/vsock.sock"},
        })
    );
    assert_eq!(reqs[0].body["serial_out_path"], "/console.log");
    // What `vm show` prints for a restore is the same sequence, without InstanceStart.
    let shown = Firecracker::new("/fc".into()).api_calls(&cfg);
    let paths: Vec<&str> = shown.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(paths, ["/serial", "/snapshot/load"]);
}

#[test]
fn requests_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = full_config(dir.path());
    let reqs = all_requests(&cfg);
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/machine-config",
            "/boot-source",
            "/serial",
            "/drives/vda",
            "/drives/vdb",
            "/drives/vdc",
            "/vsock",
            "/network-interfaces/eth0",
            "/actions",
            "/actions",
            "/vm",
            "/vm",
            "/snapshot/create",
            "/serial",
            "/snapshot/load"
        ]
    );
    let run = dir.path().display();
    assert_eq!(
        reqs[0].body,
        serde_json::json!({"vcpu_count": 2, "mem_size_mib": 512})
    );
    assert_eq!(
        reqs[1].body["boot_args"],
        "quiet banger.channel=vsock console=ttyS0 reboot=k panic=-1 pci=off"
    );
    assert_eq!(reqs[1].body["initrd_path"], format!("{run}/initrd"));
    assert_eq!(
        reqs[2].body["serial_out_path"],
        format!("{run}/console.log")
    );
    // Drives by names relative to the run directory, the same for every VM (a saved
    // state records them).
    assert_eq!(
        reqs[3].body,
        serde_json::json!({"drive_id": "vda", "path_on_host": "fc-drives/vda",
                           "is_root_device": false, "is_read_only": true})
    );
    assert_eq!(reqs[4].body["is_read_only"], false);
    assert_eq!(reqs[5].body["path_on_host"], "fc-drives/vdc");
    assert_eq!(
        reqs[6].body,
        serde_json::json!({"guest_cid": 3, "uds_path": format!("{run}/vsock.sock")})
    );
    assert_eq!(reqs[7].body["host_dev_name"], "tap0");
    assert_eq!(reqs[8].body["action_type"], "InstanceStart");
    assert_eq!(reqs[9].body["action_type"], "SendCtrlAltDel");

    // No network, no initrd, no caller command line: those requests and fields go.
    let bare = VmConfig {
        net: NetConfig::None,
        initrd: None,
        cmdline: String::new(),
        disks: vec![],
        ..cfg.clone()
    };
    let reqs = api::requests(
        &bare,
        &api::GuestPaths::direct(&bare, &RunFiles::new(dir.path())),
        None,
    );
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    assert!(reqs[1].body.get("initrd_path").is_none());
    assert_eq!(reqs[1].body["boot_args"], api::CMDLINE_SUFFIX);
    let shown = Firecracker::new("/fc".into()).api_calls(&cfg);
    assert_eq!(
        shown.last().unwrap().2,
        r#"{"action_type":"InstanceStart"}"#
    );
}

#[test]
fn what_firecracker_cannot_run_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ok = VmConfig {
        net: NetConfig::None,
        ..full_config(dir.path())
    };
    check_config(&ok).unwrap();
    let refused = |cfg: VmConfig| check_config(&cfg).unwrap_err().to_string();

    let e = refused(VmConfig {
        channel: ChannelKind::Serial,
        ..ok.clone()
    });
    assert_eq!(
        e,
        "firecracker does not support the serial agent channel: use the vsock channel \
         (Firecracker has hybrid vsock built in)"
    );
    let e = refused(VmConfig {
        accel: Accel::Tcg { tsc_khz: None },
        ..ok.clone()
    });
    assert!(
        e.contains("software emulation") && e.contains("use QEMU"),
        "{e}"
    );
    let e = refused(VmConfig {
        cpus: 3,
        ..ok.clone()
    });
    assert!(e.contains("cpus = 3") && e.contains("even number"), "{e}");
    let bz = dir.path().join("vmlinuz");
    std::fs::write(&bz, b"MZ\0\0").unwrap();
    let e = refused(VmConfig {
        kernel: bz.clone(),
        ..ok.clone()
    });
    assert!(
        e.contains(&bz.display().to_string()) && e.contains("vmlinux"),
        "{e}"
    );
    let e = refused(VmConfig {
        cmdline: "x".repeat(2040),
        ..ok.clone()
    });
    assert!(e.contains("command line"), "{e}");
    let mut qcow = ok.clone();
    qcow.disks[1].format = crate::DiskFormat::Qcow2;
    let e = refused(qcow);
    assert!(
        e.contains("disk 1") && e.contains("upper.ext4") && e.contains("qcow2 format"),
        "{e}"
    );
    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join("vmstate"), b"").unwrap();
    let e = refused(VmConfig {
        restore: Some(snap.clone()),
        ..ok.clone()
    });
    assert!(e.contains("restoring from") && e.contains("memory"), "{e}");
    std::fs::write(snap.join("memory"), b"").unwrap();
    check_config(&VmConfig {
        restore: Some(snap),
        ..ok.clone()
    })
    .unwrap();
    // The channel endpoint is vsock whatever the config says.
    assert_eq!(
        Firecracker::new("/fc".into()).channel_endpoint(&ok),
        ChannelEndpoint::VsockListen(dir.path().join("vsock.sock_1025"))
    );
}

#[test]
fn instance_ids_are_what_firecracker_accepts() {
    assert_eq!(instance_id("web 1"), "web-1");
    assert_eq!(instance_id(""), "banger");
    assert_eq!(instance_id(&"é".repeat(100)).len(), 64);
    assert_eq!(api::drive_id(0), "vda");
    assert_eq!(api::drive_id(25), "vdz");
}

/// One request as the fake API received it.
type Received = (String, String, Value);

/// A stand-in for Firecracker's API on `<run>/fc.sock`: answers `n` requests with 204
/// and returns them. For `PUT /snapshot/create` it writes the two files as Firecracker
/// would, under `chroot` (the jail root when the VM is jailed, else `/`).
fn fake_api(run: &Path, chroot: &Path, n: usize) -> std::thread::JoinHandle<Vec<Received>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(run.join("fc.sock")).unwrap();
    let chroot = chroot.to_path_buf();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut words = line.split_whitespace();
            let (method, path) = (words.next().unwrap(), words.next().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.strip_prefix("Content-Length: ") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            if path == "/snapshot/create" {
                for (k, content) in [("snapshot_path", "state"), ("mem_file_path", "memory")] {
                    let p = body[k].as_str().unwrap().trim_start_matches('/');
                    std::fs::write(chroot.join(p), content).unwrap();
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            got.push((method.to_string(), path.to_string(), body));
        }
        got
    })
}

#[test]
fn pause_resume_and_save_state_make_exactly_these_calls() {
    let run = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let server = fake_api(run.path(), Path::new("/"), 4);
    let vmm = Firecracker::new("/fc".into());
    vmm.pause(run.path()).unwrap();
    vmm.save_state(run.path(), dest.path()).unwrap();
    vmm.resume(run.path()).unwrap();
    vmm.resume(run.path()).unwrap();
    let got = server.join().unwrap();
    let d = dest.path().display();
    assert_eq!(
        got,
        [
            (
                "PATCH".into(),
                "/vm".into(),
                serde_json::json!({"state": "Paused"})
            ),
            (
                "PUT".into(),
                "/snapshot/create".into(),
                serde_json::json!({"mem_file_path": format!("{d}/memory"),
                                   "snapshot_path": format!("{d}/vmstate"),
                                   "snapshot_type": "Full"})
            ),
            (
                "PATCH".into(),
                "/vm".into(),
                serde_json::json!({"state": "Resumed"})
            ),
            (
                "PATCH".into(),
                "/vm".into(),
                serde_json::json!({"state": "Resumed"})
            ),
        ]
    );
    assert_eq!(
        std::fs::read(dest.path().join("memory")).unwrap(),
        b"memory"
    );
    use std::os::unix::fs::PermissionsExt;
    for f in ["vmstate", "memory"] {
        let mode = std::fs::metadata(dest.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{f}: the guest's memory is its owner's only"
        );
    }
    // A VM that is gone: the error says the socket does not answer.
    std::fs::remove_file(run.path().join("fc.sock")).unwrap();
    let e = vmm.pause(run.path()).unwrap_err();
    assert!(matches!(e, VmmError::Api(ApiError::Connect { .. })), "{e}");
}

/// Jailed, Firecracker writes inside its jail (`/snapshot/…`, the only paths it sees);
/// the files end up in `dest` and nothing stays in the jail.
#[test]
fn a_jailed_save_is_written_in_the_jail_and_moved_to_dest() {
    let run = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let jail_dir = base.path().join("firecracker/vm-1");
    let root = jail_dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&jail_dir, run.path().join("jail")).unwrap();
    let server = fake_api(run.path(), &root, 1);
    save_state(run.path(), dest.path()).unwrap();
    let got = server.join().unwrap();
    assert_eq!(
        got[0].2,
        serde_json::json!({"mem_file_path": "/snapshot/memory",
                           "snapshot_path": "/snapshot/vmstate", "snapshot_type": "Full"})
    );
    assert_eq!(
        std::fs::read(dest.path().join("vmstate")).unwrap(),
        b"state"
    );
    assert_eq!(
        std::fs::read(dest.path().join("memory")).unwrap(),
        b"memory"
    );
    assert!(!root.join("snapshot").exists());
    // A failed snapshot leaves no staging directory either.
    std::fs::remove_file(run.path().join("fc.sock")).unwrap();
    let e = save_state(run.path(), dest.path()).unwrap_err();
    assert!(matches!(e, VmmError::Api(ApiError::Connect { .. })), "{e}");
    assert!(!root.join("snapshot").exists());
}
