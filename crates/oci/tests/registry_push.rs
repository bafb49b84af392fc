//! Pushes to a real `docker-registry` on loopback: blobs (monolithic upload, skipped
//! when present), a manifest by tag; then `skopeo` and our own puller read it back.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_oci::{
    BlobCache, CollectSink, CredentialStore, Digest, Error, Limits, Platform, Puller,
    RegistryClient, RegistryOptions, Source, flatten,
};
use banger_testkit::layers::{LayerBuilder, gzip, noise};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_blobs_stream_in_chunks_and_the_registry_checks_the_digest() {
    let reg = Registry::start();
    let host = reg.host();
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    // Several upload chunks plus a ragged tail.
    let data = noise((3 << 20) + 12_345, 1);
    let path = dir.path().join("layer.bin");
    std::fs::write(&path, &data).unwrap();
    let digest = Digest::of(&data);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let progress: banger_oci::UploadProgress = Arc::new(move |n| log.lock().unwrap().push(n));
    assert!(
        c.push_blob_file(&host, "t/file", &digest, &path, Some(progress))
            .await
            .unwrap()
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "one report per chunk: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last().copied(), Some(data.len() as u64));
    // The registry serves exactly what the file held.
    let url = format!("http://{host}/v2/t/file/blobs/{digest}");
    let body =
        banger_testkit::tools::run(banger_testkit::tools::command("curl").args(["-sfL", &url]))
            .stdout;
    assert_eq!(Digest::of(&body), digest);
    // Present now: not sent again.
    assert!(
        !c.push_blob_file(&host, "t/file", &digest, &path, None)
            .await
            .unwrap()
    );
    // A digest that does not match the file is refused by the registry, and named.
    let wrong = Digest::of(b"not the file");
    let err = c
        .push_blob_file(&host, "t/file", &wrong, &path, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(wrong.hex()), "{err}");
    // A missing file is an I/O error naming it.
    let err = c
        .push_blob_file(&host, "t/file", &digest, &dir.path().join("gone"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

/// A minimal upload endpoint whose first `PUT` fails with 500 after reading the body:
/// the retry must send the whole file again, from byte 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_file_upload_starts_again_from_the_first_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let puts: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let bodies = puts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = buf[head_end..].to_vec();
                while body.len() < len {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body.extend_from_slice(&tmp[..n]),
                    }
                }
                let status = if head.starts_with("head ") {
                    "404 Not Found"
                } else if head.starts_with("post ") {
                    "202 Accepted\r\nLocation: /v2/t/r/blobs/uploads/u1"
                } else {
                    let mut b = bodies.lock().unwrap();
                    b.push(body);
                    if b.len() == 1 {
                        "500 Internal Server Error"
                    } else {
                        "201 Created"
                    }
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let data = noise((2 << 20) + 7, 2);
    let path = dir.path().join("layer.bin");
    std::fs::write(&path, &data).unwrap();
    let host = format!("127.0.0.1:{port}");
    assert!(
        client()
            .push_blob_file(&host, "t/r", &Digest::of(&data), &path, None)
            .await
            .unwrap()
    );
    let puts = puts.lock().unwrap();
    assert_eq!(puts.len(), 2, "one failed attempt, one retry");
    assert!(
        puts.iter().all(|b| *b == data),
        "each attempt sends the whole file"
    );
}

/// Pushing to a registry with bearer-token auth: the upload's challenge asks for a
/// `pull,push` token, which the token server grants to the configured user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_with_bearer_tokens_from_docker_config() {
    let reg = Registry::start_with_token_auth();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, reg.docker_config_json()).unwrap();
    let authed = RegistryClient::new(
        RegistryOptions {
            backoff: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        CredentialStore::load(Some(&config)).unwrap(),
    )
    .unwrap();
    let data = noise(100_000, 4);
    let digest = Digest::of(&data);
    // Anonymous: refused, and said so.
    match client().push_blob(&host, "t/tok", &digest, &data).await {
        Err(Error::Unauthorized(_)) => {}
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert!(
        authed
            .push_blob(&host, "t/tok", &digest, &data)
            .await
            .unwrap()
    );
    assert!(authed.blob_exists(&host, "t/tok", &digest).await.unwrap());
    let requests = reg.token_server().unwrap().requests();
    // The registry's challenge names both actions, in no fixed order.
    let push_token = |r: &&String| {
        r.contains("scope=repository%3At%2Ftok%3A")
            && (r.contains("pull%2Cpush") || r.contains("push%2Cpull"))
            && r.ends_with("granted")
    };
    assert!(requests.iter().any(|r| push_token(&r)), "{requests:#?}");
}
