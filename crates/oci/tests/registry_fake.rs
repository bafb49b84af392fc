//! Auth flows and network faults against an in-process fake registry (raw HTTP/1.1 on
//! loopback, one request per connection, so bodies can be cut or stalled at will).

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_oci::{
    BlobCache, CollectSink, CredentialStore, Error, Limits, Platform, Puller, RegistryOptions,
    Source, flatten,
};
use banger_testkit::layers::LayerBuilder;
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::wait;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    /// Bearer tokens; the token endpoint wants these basic credentials if `Some`.
    Bearer(Option<(String, String)>),
    Basic(String, String),
}

#[derive(Default)]
struct Behaviour {
    auth: Auth,
    /// Blob requests answered 500 before serving.
    blob_500s: AtomicUsize,
    /// Blob responses cut after half the body (count).
    truncate: AtomicUsize,
    ignore_range: bool,
    redirect_blobs: bool,
    corrupt_blobs: bool,
    stall_blobs: bool,
    slow_headers: Option<Duration>,
}

struct Fake {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    layout: tempfile::TempDir,
    manifest_digest: String,
}

fn b64(s: &str) -> String {
    banger_testkit::token_auth::base64(s.as_bytes(), false)
}

async fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    cut: Option<usize>,
) {
    let mut h = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let _ = s.write_all(h.as_bytes()).await;
    let _ = s.write_all(&body[..cut.unwrap_or(body.len())]).await;
    let _ = s.flush().await;
}

async fn handle(
    mut s: TcpStream,
    b: Arc<Behaviour>,
    log: Arc<Mutex<Vec<String>>>,
    root: std::path::PathBuf,
    port: u16,
) {
    let Some((path, headers)) = common::read_request_head(&mut s).await else {
        return;
    };
    log.lock().unwrap().push(format!(
        "{path} range={}",
        headers.get("range").cloned().unwrap_or_default()
    ));
    if let Some(d) = b.slow_headers {
        tokio::time::sleep(d).await;
    }
    let authz = headers.get("authorization").cloned().unwrap_or_default();
    if path.starts_with("/token") {
        if let Auth::Bearer(Some((u, p))) = &b.auth
            && authz != format!("Basic {}", b64(&format!("{u}:{p}")))
        {
            return respond(&mut s, "401 Unauthorized", &[], b"{}", None).await;
        }
        return respond(
            &mut s,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            br#"{"token":"tok123"}"#,
            None,
        )
        .await;
    }
    if path.starts_with("/v2/") {
        let challenge = match &b.auth {
            Auth::None => None,
            Auth::Bearer(_) if authz == "Bearer tok123" => None,
            Auth::Bearer(_) => Some(format!(
                r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:repo:pull""#
            )),
            Auth::Basic(u, p) if authz == format!("Basic {}", b64(&format!("{u}:{p}"))) => None,
            Auth::Basic(..) => Some(r#"Basic realm="fake""#.to_string()),
        };
        if let Some(c) = challenge {
            return respond(
                &mut s,
                "401 Unauthorized",
                &[("WWW-Authenticate", c)],
                b"{}",
                None,
            )
            .await;
        }
    }
    let blob = |d: &str| {
        std::fs::read(
            root.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .ok()
    };
    if path == "/v2/" {
        return respond(&mut s, "200 OK", &[], b"{}", None).await;
    }
    if let Some(r) = path.strip_prefix("/v2/repo/manifests/") {
        let d = if r.starts_with("sha256:") {
            r.to_string()
        } else if r == "t" {
            std::fs::read_to_string(root.join("tag")).unwrap()
        } else {
            String::new()
        };
        return match blob(&d) {
            Some(body) => {
                respond(
                    &mut s,
                    "200 OK",
                    &[
                        ("Content-Type", oci_image::MT_MANIFEST.into()),
                        ("Docker-Content-Digest", d),
                    ],
                    &body,
                    None,
                )
                .await
            }
            None => {
                respond(
                    &mut s,
                    "404 Not Found",
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
                    None,
                )
                .await
            }
        };
    }
    let (d, direct) = if let Some(d) = path.strip_prefix("/v2/repo/blobs/") {
        (d.to_string(), false)
    } else if let Some(d) = path.strip_prefix("/storage/") {
        (d.to_string(), true)
    } else {
        return respond(&mut s, "404 Not Found", &[], b"", None).await;
    };
    let Some(mut body) = blob(&d) else {
        return respond(&mut s, "404 Not Found", &[], b"", None).await;
    };
    if b.redirect_blobs && !direct {
        return respond(
            &mut s,
            "307 Temporary Redirect",
            &[("Location", format!("http://localhost:{port}/storage/{d}"))],
            b"",
            None,
        )
        .await;
    }
    if b.blob_500s.load(Ordering::SeqCst) > 0 && body.len() > 600 {
        b.blob_500s.fetch_sub(1, Ordering::SeqCst);
        return respond(&mut s, "500 Internal Server Error", &[], b"oops", None).await;
    }
    if b.corrupt_blobs && body.len() > 600 {
        let n = body.len();
        body[n / 2] ^= 0xff;
    }
    let n = body.len();
    if b.stall_blobs && n > 600 {
        let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
        let _ = s.write_all(h.as_bytes()).await;
        let _ = s.write_all(&body[..n / 2]).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let cut = if n > 600 && b.truncate.load(Ordering::SeqCst) > 0 {
        b.truncate.fetch_sub(1, Ordering::SeqCst);
        Some(n / 2)
    } else {
        None
    };
    let range = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    match range {
        Some(from) if !b.ignore_range && from < n => {
            let cr = format!("bytes {from}-{}/{n}", n - 1);
            respond(
                &mut s,
                "206 Partial Content",
                &[("Content-Range", cr)],
                &body[from..],
                None,
            )
            .await
        }
        _ => respond(&mut s, "200 OK", &[], &body, cut).await,
    }
}

async fn start(b: Behaviour) -> Fake {
    let layout = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layers = vec![
        Layer {
            tar: LayerBuilder::new().file("big", &big).finish(),
            compression: Compression::Gzip,
        },
        Layer {
            tar: LayerBuilder::new().file("hello", b"world").finish(),
            compression: Compression::Zstd,
        },
    ];
    let w = oci_image::write_image(layout.path(), &layers, "amd64");
    std::fs::write(layout.path().join("tag"), &w.manifest_digest).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b, l2, root) = (Arc::new(b), log.clone(), layout.path().to_path_buf());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s, b.clone(), l2.clone(), root.clone(), port));
        }
    });
    Fake {
        port,
        log,
        layout,
        manifest_digest: w.manifest_digest,
    }
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        backoff: Duration::from_millis(5),
        read_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn pull_with(
    f: &Fake,
    cache: &std::path::Path,
    opts: RegistryOptions,
    creds: CredentialStore,
) -> Result<CollectSink, Error> {
    let p = Puller::new(BlobCache::open(cache).unwrap(), opts, creds).unwrap();
    let img = p
        .resolve(
            &Source::parse(&format!("127.0.0.1:{}/repo:t", f.port))?,
            &Platform::linux_amd64(),
        )
        .await?;
    let inputs = p.fetch_layers(&img, Arc::new(|_| {})).await?;
    let mut s = CollectSink::default();
    flatten(&inputs, &mut s, &Limits::default())?;
    Ok(s)
}

fn blob_count(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0)
}

fn creds_for(port: u16, user: &str, pass: &str) -> (tempfile::TempDir, CredentialStore) {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"127.0.0.1:{port}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("{user}:{pass}"))
        ),
    )
    .unwrap();
    let s = CredentialStore::load(Some(&cfg)).unwrap();
    (d, s)
}

#[tokio::test]
async fn anonymous_bearer_token_flow() {
    let f = start(Behaviour {
        auth: Auth::Bearer(None),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let s = pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap();
    assert_eq!(s.entries.len(), 2);
    assert!(
        f.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("/token?"))
    );
}

#[tokio::test]
async fn bearer_token_with_config_credentials() {
    let f = start(Behaviour {
        auth: Auth::Bearer(Some(("alice".into(), "s3cret".into()))),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    let (_d, creds) = creds_for(f.port, "alice", "s3cret");
    pull_with(&f, c.path(), opts(), creds).await.unwrap();
}

#[tokio::test]
async fn basic_auth_with_config_credentials() {
    let f = start(Behaviour {
        auth: Auth::Basic("bob".into(), "pw".into()),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    let (_d, wrong) = creds_for(f.port, "bob", "nope");
    let e = pull_with(&f, c.path(), opts(), wrong).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    let (_d, creds) = creds_for(f.port, "bob", "pw");
    pull_with(&f, c.path(), opts(), creds).await.unwrap();
}

#[tokio::test]
async fn retries_500s_then_succeeds() {
    let f = start(Behaviour {
        blob_500s: AtomicUsize::new(2),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap();
    let f = start(Behaviour {
        blob_500s: AtomicUsize::new(100),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = pull_with(
        &f,
        c.path(),
        RegistryOptions {
            attempts: 3,
            ..opts()
        },
        CredentialStore::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    assert_eq!(std::fs::read_dir(c.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn truncated_body_resumes_with_range() {
    let f = start(Behaviour {
        truncate: AtomicUsize::new(1),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let s = pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap();
    assert_eq!(
        s.entries
            .iter()
            .find(|(e, _)| e.path == "big")
            .unwrap()
            .1
            .as_ref()
            .unwrap()
            .len(),
        200_000
    );
    assert!(
        f.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("range=bytes=")),
        "{:?}",
        f.log.lock().unwrap()
    );
}

#[tokio::test]
async fn truncated_body_restarts_when_range_is_ignored() {
    let f = start(Behaviour {
        truncate: AtomicUsize::new(1),
        ignore_range: true,
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_blob_content_is_rejected_and_not_cached() {
    let f = start(Behaviour {
        corrupt_blobs: true,
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // Whatever made it into the cache (the config, small layers the fake left intact) is
    // whole and verified; the corrupted blobs are not there.
    let blobs = c.path().join("blobs/sha256");
    let mut cached = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let body = std::fs::read(entry.path()).unwrap();
        assert!(body.len() <= 600, "a corrupted (large) blob was cached");
        assert_eq!(
            banger_oci::Digest::of(&body).hex(),
            entry.file_name().to_string_lossy()
        );
        cached += 1;
    }
    assert!(cached >= 1, "the intact config is cached");
}

#[tokio::test]
async fn follows_redirects_to_blob_storage() {
    let f = start(Behaviour {
        redirect_blobs: true,
        auth: Auth::Bearer(None),
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    pull_with(&f, c.path(), opts(), CredentialStore::default())
        .await
        .unwrap();
    assert!(
        f.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("/storage/"))
    );
}

#[tokio::test]
async fn slow_registry_times_out() {
    let f = start(Behaviour {
        stall_blobs: true,
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let o = RegistryOptions {
        read_timeout: Duration::from_millis(300),
        attempts: 2,
        ..opts()
    };
    let e = pull_with(&f, c.path(), o, CredentialStore::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    let f = start(Behaviour {
        slow_headers: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .await;
    let o = RegistryOptions {
        read_timeout: Duration::from_millis(300),
        attempts: 1,
        ..opts()
    };
    assert!(
        pull_with(&f, c.path(), o, CredentialStore::default())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_fetch_midway_leaves_no_partial_blob() {
    let f = start(Behaviour {
        stall_blobs: true,
        ..Default::default()
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let path = c.path().to_path_buf();
    let port = f.port;
    let task = tokio::spawn(async move {
        let p = Puller::new(
            BlobCache::open(&path).unwrap(),
            opts(),
            CredentialStore::default(),
        )
        .unwrap();
        let img = p
            .resolve(
                &Source::parse(&format!("127.0.0.1:{port}/repo:t")).unwrap(),
                &Platform::linux_amd64(),
            )
            .await
            .unwrap();
        let _ = p.fetch_layers(&img, Arc::new(|_| {})).await;
    });
    // The cache (and its tmp dir) is created inside the task.
    let in_flight = || {
        std::fs::read_dir(c.path().join("tmp"))
            .map(Iterator::count)
            .unwrap_or(0)
    };
    wait::until("the download to be in flight", || in_flight() > 0);
    task.abort();
    let _ = task.await;
    wait::until("the aborted download's temp file to go", || {
        in_flight() == 0
    });
    // Whatever is visible is whole and verified (config, small layer); the stalled big layer is not.
    for e in std::fs::read_dir(c.path().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let want = format!("sha256:{}", e.file_name().to_string_lossy());
        assert_eq!(oci_image::sha256(&std::fs::read(e.path()).unwrap()), want);
    }
    assert!(blob_count(c.path()) < 3);
    let _ = (&f.layout, &f.manifest_digest);
}

#[tokio::test]
async fn digest_pinned_manifest_is_verified() {
    let f = start(Behaviour::default()).await;
    let c = tempfile::tempdir().unwrap();
    let p = Puller::new(
        BlobCache::open(c.path()).unwrap(),
        opts(),
        CredentialStore::default(),
    )
    .unwrap();
    let img = p
        .resolve(
            &Source::parse(&format!("127.0.0.1:{}/repo@{}", f.port, f.manifest_digest)).unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), f.manifest_digest);
    let other = banger_oci::Digest::of(b"x");
    let e = p
        .resolve(
            &Source::parse(&format!("127.0.0.1:{}/repo@{other}", f.port)).unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
}
