//! Pushes to a real `docker-registry` on loopback: blobs (monolithic upload, skipped
//! when present), a manifest by tag; then `skopeo` and our own puller read it back.

use banger_oci::{
    BlobCache, CollectSink, CredentialStore, Digest, Error, Limits, Platform, Puller,
    RegistryClient, RegistryOptions, Source, flatten,
};
use banger_testkit::layers::{LayerBuilder, gzip};
use banger_testkit::registry::Registry;
use std::sync::Arc;

fn client() -> RegistryClient {
    RegistryClient::new(
        RegistryOptions {
            backoff: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_image_is_read_back_by_skopeo_and_by_us() {
    let reg = Registry::start();
    let host = reg.host();
    let c = client();
    let tar = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"pushed\n")
        .finish();
    let layer = gzip(&tar);
    let layer_digest = Digest::of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"x": "y"}},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]},
    }))
    .unwrap();
    let config_digest = Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest.to_string(), "size": layer.len()}],
        "annotations": {"a": "b"},
    }))
    .unwrap();

    assert!(!c.blob_exists(&host, "t/app", &layer_digest).await.unwrap());
    assert!(
        c.push_blob(&host, "t/app", &layer_digest, &layer)
            .await
            .unwrap()
    );
    // Present now: not sent again.
    assert!(
        !c.push_blob(&host, "t/app", &layer_digest, &layer)
            .await
            .unwrap()
    );
    assert!(
        c.push_blob(&host, "t/app", &config_digest, &config)
            .await
            .unwrap()
    );
    let d = c
        .push_manifest(
            &host,
            "t/app",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await
        .unwrap();
    assert_eq!(d, Digest::of(&manifest));

    let out = banger_testkit::tools::run_stdout(
        banger_testkit::tools::command("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{host}/t/app:v1")),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], d.to_string());
    assert_eq!(v["Labels"]["x"], "y");

    let tmp = tempfile::tempdir().unwrap();
    let p = Puller::new(
        BlobCache::open(tmp.path()).unwrap(),
        RegistryOptions::default(),
        CredentialStore::default(),
    )
    .unwrap();
    let img = p
        .resolve(
            &Source::parse(&format!("{host}/t/app:v1")).unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(img.manifest_digest, d);
    let inputs = p.fetch_layers(&img, Arc::new(|_| {})).await.unwrap();
    let mut sink = CollectSink::default();
    flatten(&inputs, &mut sink, &Limits::default()).unwrap();
    let hello = sink
        .entries
        .iter()
        .find(|(e, _)| e.path == "etc/hello")
        .and_then(|(_, d)| d.clone());
    assert_eq!(hello.as_deref(), Some(&b"pushed\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_wrong_digests_and_reports_unreachable_registries() {
    let reg = Registry::start();
    let c = client();
    let wrong = Digest::of(b"something else");
    match c.push_blob(&reg.host(), "t/x", &wrong, b"data").await {
        Err(Error::DigestMismatch { .. }) => {}
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    // A manifest naming blobs the registry lacks is refused by the registry.
    let err = c
        .push_manifest(
            &reg.host(),
            "t/x",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    let mut dead = Registry::start();
    let host = dead.host();
    dead.stop();
    let quick = RegistryClient::new(
        RegistryOptions {
            attempts: 2,
            backoff: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap();
    let d = Digest::of(b"data");
    match quick.push_blob(&host, "t/x", &d, b"data").await {
        Err(Error::Network { .. }) => {}
        other => panic!("expected a network error, got {other:?}"),
    }
}
