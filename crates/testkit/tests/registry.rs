//! The registry harness against real `docker-registry`, `skopeo` and `umoci`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use banger_testkit::registry::Registry;
use banger_testkit::tools::{self, run, run_stdout};

/// A one-layer OCI layout at `dir` (tag `t`), built with umoci from a tiny tar.
fn tiny_layout(dir: &Path) {
    let layout = dir.join("layout");
    let layout_s = layout.to_str().expect("utf-8 path");
    run(tools::command("umoci").args(["init", "--layout", layout_s]));
    run(tools::command("umoci").args(["new", "--image", &format!("{layout_s}:t")]));
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("etc")).expect("mkdir content");
    std::fs::write(content.join("etc/hello"), "world\n").expect("write file");
    let tar = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&content)
        .arg("."));
    run(tools::command("umoci")
        .args(["raw", "add-layer", "--image", &format!("{layout_s}:t")])
        .arg(&tar));
}

fn curl_manifest(reg: &Registry, repo: &str, tag: &str) -> serde_json::Value {
    let out = run_stdout(tools::command("curl").args([
        "-fsS",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
    ]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("manifest is not JSON ({e}): {out}"))
}

#[test]
fn push_then_read_manifest_and_survive_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny_layout(tmp.path());
    let mut reg = Registry::start();
    assert!(reg.host().starts_with("127.0.0.1:"));

    let src = format!("oci:{}:t", tmp.path().join("layout").display());
    reg.push(&src, "test/tiny:v1", &[]);

    let manifest = curl_manifest(&reg, "test/tiny", "v1");
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    let layers = manifest["layers"].as_array().expect("layers array");
    assert_eq!(layers.len(), 1, "{manifest}");
    let digest = layers[0]["digest"].as_str().expect("layer digest");

    // The blob is served and is our tar (uncompressed, as umoci added it).
    let blob = tmp.path().join("blob");
    run(tools::command("curl")
        .args(["-fsS", "-o"])
        .arg(&blob)
        .arg(format!("{}/v2/test/tiny/blobs/{digest}", reg.url())));
    let listing = run_stdout(Command::new("tar").arg("-tf").arg(&blob));
    assert!(listing.contains("etc/hello"), "{listing}");

    // Kill it like a crash: the port stops answering; restart keeps port and storage.
    let port = reg.port();
    reg.stop();
    assert!(!reg.is_running());
    assert!(
        reg.get("/v2/").is_err(),
        "registry still answering after stop"
    );
    reg.restart();
    assert!(reg.is_running());
    assert_eq!(reg.port(), port);
    let again = curl_manifest(&reg, "test/tiny", "v1");
    assert_eq!(again["layers"], manifest["layers"]);
    assert!(reg.log().contains("listening on"), "{}", reg.log());
}

#[test]
fn two_registries_run_side_by_side() {
    let a = Registry::start();
    let b = Registry::start();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.get("/v2/").expect("GET a").0, 200);
    assert_eq!(b.get("/v2/").expect("GET b").0, 200);
}
