//! `vm run`'s client half ([`banger_client::run::run`]) against an in-process fake daemon
//! that records every call: the order of the calls, `--rm`'s lease and `auto_remove`, the
//! default image pulled when missing, and never deleting a VM this run did not make.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::vm::{VmCreateParams, VmDefaults};
use banger_api::{ApiError, ErrorBody, ErrorCode};
use banger_client::Client;
use banger_client::run::{NoInterrupt, RunEvent, RunOptions, run};
use banger_client::workspace::workspace;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// How the fake daemon answers.
#[derive(Clone, Copy, Default)]
struct Script {
    /// `image.show` finds the image.
    has_image: bool,
    /// `vm.show` finds a VM of any name (someone else's).
    vm_exists: bool,
    /// `vm.create` refuses: another client took the name in between.
    create_races: bool,
    /// What the guest says about the upload.
    put_error: Option<&'static str>,
}

#[derive(Default)]
struct Log {
    calls: Vec<(String, Value)>,
    uploaded: Vec<String>,
}

struct Daemon {
    _dir: tempfile::TempDir,
    client: Client,
    log: Arc<Mutex<Log>>,
}

impl Daemon {
    async fn start(script: Script) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bangerd.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| answer(req, log.clone(), script));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Daemon {
            _dir: dir,
            client: Client::new(&path),
            log,
        }
    }

    fn methods(&self) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.calls.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The params of the first call of `method`.
    fn params(&self, method: &str) -> Value {
        let log = self.log.lock().expect("log");
        log.calls
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no {method} call"))
    }
}

fn json_response(status: u16, value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("response")
}

fn refusal(code: ErrorCode, message: &str) -> Response<Full<Bytes>> {
    let body = ErrorBody {
        error: ApiError::new(code, message),
    };
    let status = code.http_status();
    json_response(status, &serde_json::to_value(&body).expect("json"))
}

fn image(name: &str) -> Value {
    json!({
        "id": "img-1", "name": name, "managed": true, "artifact_dir": null,
        "rootfs_path": "/r", "kernel_path": "/k", "initrd_path": null, "modules_dir": null,
        "kernel_ref": "default", "source_ref": null, "manifest_digest": null, "platform": null,
        "size_bytes": null, "allocated_bytes": null, "created_at": "2025-01-01T00:00:00Z",
    })
}

/// A running VM as `vm.create` describes it (JSON: the wire, not the Rust types).
fn vm(name: &str, image: &str) -> Value {
    let disk = json!({"apparent_bytes": 0, "allocated_bytes": 0});
    json!({
        "id": "vm-1", "name": name, "image": image, "image_id": "img-1", "state": "running",
        "cpus": 2, "memory_mib": 1024, "init": "agent", "vmm": "qemu", "accel": "tcg",
        "accel_reason": "", "channel": "vsock", "net": "public", "last_error": null,
        "stages": [], "root_disk": disk, "work_disk": disk, "pid": 4242, "dir": "/v",
        "created_at": "2025-01-01T00:00:00Z", "started_at": "2025-01-01T00:00:01Z",
    })
}

async fn answer(
    mut req: Request<Incoming>,
    log: Arc<Mutex<Log>>,
    script: Script,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.uri().path().trim_start_matches("/v1/").to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let params: Value = serde_json::from_slice(&body).unwrap_or_default();
    log.lock()
        .expect("log")
        .calls
        .push((method.clone(), params.clone()));
    let text = |key: &str| params[key].as_str().unwrap_or_default().to_string();
    Ok(match method.as_str() {
        "vm.defaults" => json_response(
            200,
            &json!({"image": "debian-bookworm", "image_ref": "debian:bookworm", "kernel": "cloud"}),
        ),
        "image.show" if script.has_image => {
            let mut details = image(&text("image"));
            details["disk"] = json!({"own_bytes": 0, "shared_bytes": 0});
            json_response(200, &details)
        }
        "image.show" => refusal(ErrorCode::NotFound, "no such image"),
        "image.pull" => json_response(200, &image(&text("name"))),
        "vm.show" if script.vm_exists => json_response(200, &vm(&text("vm"), "other")),
        "vm.show" => refusal(ErrorCode::NotFound, "no such vm"),
        // The lease's event, then the end of the stream (a real daemon holds it open).
        "vm.hold" => Response::builder()
            .header(hyper::header::CONTENT_TYPE, banger_api::NDJSON)
            .body(Full::new(Bytes::from_static(
                b"{\"event\":{\"kind\":\"lease\",\"id\":\"lease-1\"}}\n",
            )))
            .expect("response"),
        "vm.create" if script.create_races => {
            refusal(ErrorCode::AlreadyExists, "a vm of that name exists")
        }
        "vm.create" => {
            let name = match text("name") {
                n if n.is_empty() => {
                    format!("{}-00ab", params["name_hint"].as_str().unwrap_or("run"))
                }
                n => n,
            };
            json_response(200, &vm(&name, &text("image")))
        }
        "vm.delete" => json_response(200, &json!({"id": "vm-1", "name": params["vm"]})),
        "vm.cp.put" => {
            tokio::spawn(play_the_guest_receiving(on_upgrade, log, script.put_error));
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, banger_api::vm::STREAM_UPGRADE)
                .body(Full::default())
                .expect("response")
        }
        other => panic!("unexpected call {other}"),
    })
}

/// Reads the uploaded tar (unless refusing it) and answers as the guest agent does.
async fn play_the_guest_receiving(
    on_upgrade: hyper::upgrade::OnUpgrade,
    log: Arc<Mutex<Log>>,
    put_error: Option<&'static str>,
) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let mut tar_bytes = Vec::new();
    if put_error.is_none() {
        io.read_to_end(&mut tar_bytes).await.expect("read tar");
    }
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar_bytes[..])
        .entries()
        .expect("entries")
    {
        let e = e.expect("entry");
        names.push(e.path().expect("path").to_string_lossy().into_owned());
    }
    let result = json!({"entries": names.len(), "bytes": 0, "error": put_error});
    log.lock().expect("log").uploaded = names;
    io.write_all(result.to_string().as_bytes())
        .await
        .expect("answer");
    let _ = io.shutdown().await;
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn options(image: Option<&str>, name: Option<&str>, rm: bool) -> RunOptions {
    RunOptions {
        image: image.map(str::to_string),
        name: name.map(str::to_string),
        rm,
        workspace: None,
        records: None,
        create: VmCreateParams {
            cpus: Some(3),
            ..VmCreateParams::default()
        },
    }
}

/// What the front end saw, as words.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    pulled_default: Option<String>,
    running: Option<String>,
    copied: Option<(u64, String)>,
    kept: Option<String>,
    delete_failed: bool,
}

impl Seen {
    fn record(&mut self, event: RunEvent<'_>) {
        match event {
            RunEvent::PullingDefault(VmDefaults { image_ref, .. }) => {
                self.pulled_default = Some(image_ref.clone());
            }
            RunEvent::Running(vm) => self.running = Some(vm.name.clone()),
            RunEvent::Copied { files, name, .. } => self.copied = Some((files, name.to_string())),
            RunEvent::Kept { name } => self.kept = Some(name.to_string()),
            RunEvent::DeleteFailed { .. } => self.delete_failed = true,
            RunEvent::Progress(_) | RunEvent::StepDone | RunEvent::NotRecorded { .. } => {}
        }
    }
}

#[tokio::test]
async fn rm_pulls_the_missing_default_image_copies_runs_and_deletes() {
    let d = Daemon::start(Script::default()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("proj");
    write(&dir.join("Makefile"), "test:\n\ttrue\n");
    let mut opts = options(None, None, true);
    opts.workspace = Some(workspace(&dir).expect("workspace"));
    let mut seen = Seen::default();
    let ran_in = Mutex::new(None);
    let code = run(
        &d.client,
        opts,
        &mut NoInterrupt,
        |e| seen.record(e),
        async |_: &Client, vm: &banger_api::vm::Vm| {
            *ran_in.lock().expect("ran_in") = Some(vm.name.clone());
            Ok(7)
        },
    )
    .await
    .expect("ran");

    assert_eq!(code, 7, "the front end's step decides the exit code");
    assert_eq!(
        d.methods(),
        [
            "vm.defaults",
            "image.show",
            "image.pull",
            "vm.hold",
            "vm.create",
            "vm.cp.put",
            "vm.delete"
        ]
    );
    assert_eq!(d.params("image.show")["image"], "debian-bookworm");
    let pull = d.params("image.pull");
    assert_eq!(pull["ref"], "debian:bookworm");
    assert_eq!(pull["name"], "debian-bookworm");
    assert_eq!(pull["kernel_ref"], "cloud", "the daemon's default kernel");
    let create = d.params("vm.create");
    assert_eq!(create["image"], "debian-bookworm");
    assert_eq!(create["cpus"], 3);
    assert_eq!(create["name_hint"], "proj", "the daemon names it");
    assert_eq!(create["auto_remove"], true, "--rm: the daemon's too");
    assert_eq!(create["lease"], "lease-1");
    assert_eq!(d.params("vm.cp.put")["dest"], "/root");
    assert_eq!(
        d.params("vm.delete"),
        json!({"vm": "proj-00ab", "force": true})
    );
    assert_eq!(
        d.log.lock().expect("log").uploaded,
        ["proj", "proj/Makefile"]
    );
    assert_eq!(
        seen,
        Seen {
            pulled_default: Some("debian:bookworm".into()),
            running: Some("proj-00ab".into()),
            copied: Some((1, "proj".into())),
            ..Seen::default()
        }
    );
    assert_eq!(ran_in.lock().expect("ran_in").as_deref(), Some("proj-00ab"));
}

#[tokio::test]
async fn a_present_default_image_is_not_pulled_and_without_rm_no_lease() {
    let d = Daemon::start(Script {
        has_image: true,
        ..Script::default()
    })
    .await;
    let code = run(
        &d.client,
        options(None, None, false),
        &mut NoInterrupt,
        |_| {},
        async |_: &Client, _: &banger_api::vm::Vm| Ok(0),
    )
    .await
    .expect("ran");
    assert_eq!(code, 0);
    assert_eq!(d.methods(), ["vm.defaults", "image.show", "vm.create"]);
    let create = d.params("vm.create");
    assert_eq!(create["auto_remove"], false);
    assert!(create["lease"].is_null(), "{create}");
}

#[tokio::test]
async fn a_failed_upload_still_deletes_the_rm_vm_and_skips_the_step() {
    let d = Daemon::start(Script {
        put_error: Some("/root: no space left on device"),
        ..Script::default()
    })
    .await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("w");
    write(&dir.join("f"), "x");
    let mut opts = options(Some("img"), Some("w1"), true);
    opts.workspace = Some(workspace(&dir).expect("workspace"));
    let err = run(
        &d.client,
        opts,
        &mut NoInterrupt,
        |_| {},
        async |_: &Client, _: &banger_api::vm::Vm| panic!("no step after a failed upload"),
    )
    .await
    .expect_err("failed");
    assert!(format!("{err:#}").contains("no space left"), "{err:#}");
    assert_eq!(
        d.methods(),
        ["vm.show", "vm.hold", "vm.create", "vm.cp.put", "vm.delete"],
        "--image: no defaults, no lookup"
    );
    assert_eq!(d.params("vm.create")["name"], "w1");
    assert_eq!(d.params("vm.delete")["vm"], "w1");
}

#[tokio::test]
async fn a_failed_step_deletes_the_rm_vm_and_without_rm_it_is_kept() {
    let d = Daemon::start(Script::default()).await;
    let err = run(
        &d.client,
        options(Some("img"), Some("r1"), true),
        &mut NoInterrupt,
        |_| {},
        async |_: &Client, _: &banger_api::vm::Vm| anyhow::bail!("the VM's agent went away"),
    )
    .await
    .expect_err("failed");
    assert!(err.to_string().contains("went away"), "{err}");
    assert_eq!(
        d.methods(),
        ["vm.show", "vm.hold", "vm.create", "vm.delete"]
    );

    let d = Daemon::start(Script::default()).await;
    let mut seen = Seen::default();
    let err = run(
        &d.client,
        options(Some("img"), Some("r2"), false),
        &mut NoInterrupt,
        |e| seen.record(e),
        async |_: &Client, _: &banger_api::vm::Vm| anyhow::bail!("the VM's agent went away"),
    )
    .await
    .expect_err("failed");
    assert!(err.to_string().contains("went away"), "{err}");
    // The last vm.show asks whether the VM is still there to tell the user it was kept.
    assert_eq!(d.methods(), ["vm.show", "vm.create", "vm.show"]);
    assert!(!d.methods().contains(&"vm.delete".to_string()));
    assert_eq!(seen.running.as_deref(), Some("r2"));
}

#[tokio::test]
async fn a_taken_name_is_refused_and_someone_elses_vm_never_deleted() {
    // Taken before the run: refused before a lease or a VM exists.
    let d = Daemon::start(Script {
        vm_exists: true,
        ..Script::default()
    })
    .await;
    let err = run(
        &d.client,
        options(Some("img"), Some("theirs"), true),
        &mut NoInterrupt,
        |_| {},
        async |_: &Client, _: &banger_api::vm::Vm| panic!("no step for a taken name"),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(d.methods(), ["vm.show"]);

    // Taken in between (the create loses the race): the other VM stays.
    let d = Daemon::start(Script {
        create_races: true,
        ..Script::default()
    })
    .await;
    let err = run(
        &d.client,
        options(Some("img"), Some("theirs"), true),
        &mut NoInterrupt,
        |_| {},
        async |_: &Client, _: &banger_api::vm::Vm| panic!("no step for a taken name"),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        err.api().map(|e| e.code),
        Some(ErrorCode::AlreadyExists),
        "{err}"
    );
    assert_eq!(d.methods(), ["vm.show", "vm.hold", "vm.create"]);
}
